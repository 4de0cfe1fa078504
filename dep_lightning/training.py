"""LightningCLI wiring: DEPModule + DEPDataModule, argument links, fit-then-test."""

from __future__ import annotations

from lightning.pytorch.cli import LightningCLI

from dep_lightning.data.datamodule import DEPDataModule


class DEPLightningCLI(LightningCLI):
    """``dep-lightning fit|validate|test|predict``.

    * ``data.embedding_dim`` (known once the embedder is loaded) sets ``model.embedding_dim``;
    * ``model.backbone`` sets ``data.tokenizer``, so prompts are tokenized by the backbone's tokenizer;
    * ``fit --test_after_fit true`` runs ``test`` on the best checkpoint when training ends.
    """

    def __init__(self, args=None, run: bool = True, **kwargs):
        super().__init__(
            # Any LightningModule (DEPModule, NoUserControl, PromptingModule, CopyBaseline, …)
            # and any DataModule subclass can be selected with class_path.
            None, DEPDataModule, args=args, run=run,
            subclass_mode_model=True, subclass_mode_data=True,
            parser_kwargs={"parser_mode": "omegaconf"},
            save_config_kwargs={"overwrite": True},
            **kwargs,
        )

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.init_args.backbone", "data.init_args.tokenizer")
        parser.link_arguments("data.embedding_dim", "model.init_args.embedding_dim", apply_on="instantiate")
        parser.add_argument("--test_after_fit", type=bool, default=False,
                            help="after fit, run test with the best checkpoint (fit only)")

    def after_fit(self) -> None:
        if self.config.get(self.subcommand, {}).get("test_after_fit"):
            ckpt = "best" if self.trainer.checkpoint_callback and self.trainer.checkpoint_callback.best_model_path else None
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt)
