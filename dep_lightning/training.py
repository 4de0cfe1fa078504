"""LightningCLI wiring: DEPModule + DEPDataModule, argument links, fit-then-test."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from dep_lightning.callbacks.clock import RunClock
from dep_lightning.callbacks.history import ResumedHistory, keep_fit_history, set_history_aside
from dep_lightning.callbacks.resume import StoppedStaysStopped
from dep_lightning.callbacks.summary import RunSummary
from dep_lightning.checkpoints import is_deepspeed_folder, read_folders_outside_deepspeed
from dep_lightning.data.datamodule import DEPDataModule
from dep_lightning.quiet import quiet_frozen_eval_modules
from dep_lightning.safety import redact, require_weights_only, secret_values
from dep_lightning.scoring import DEPTrainer


class RedactingSaveConfigCallback(SaveConfigCallback):
    """Saves the run's ``config.yaml`` with secrets replaced by ``<redacted>`` (``safety.py``)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.config = redact(self.config, secret_values())
        super().setup(trainer, pl_module, stage)


class DEPLightningCLI(LightningCLI):
    """``dep-lightning fit|validate|test|predict|score``.

    * ``score --ckpt_path … [--conditions '[true, swap, none]']`` scores every test reference
      by likelihood under counterfactual conditions (``scoring.py``);
    * ``fit --score_after_fit '[true, swap, none]'`` does the same with the best checkpoint
      after fit (and after ``test_after_fit``), into the same run directory;

    * ``data.embedding_dim`` (known once the embedder is loaded) sets ``model.embedding_dim``;
    * ``model.backbone`` sets ``data.tokenizer``, so prompts are tokenized by the backbone's tokenizer;
    * ``fit --test_after_fit true`` runs ``test`` on the best checkpoint when training ends.
    """

    def __init__(self, args=None, run: bool = True, **kwargs):
        # RunSummary prints the facts of Lightning's model-summary table (and of its info lines
        # that quiet.py drops) in one line each; a config may still turn the table on. RunClock
        # appends each stage's wall time to the run directory's timing.jsonl.
        defaults = dict(kwargs.pop("trainer_defaults", None) or {})
        callbacks = defaults.get("callbacks") or []
        defaults["callbacks"] = [RunSummary(), RunClock(), *(callbacks if isinstance(callbacks, list) else [callbacks])]
        defaults.setdefault("enable_model_summary", False)
        super().__init__(
            # Any LightningModule (DEPModule, NoUserControl, PromptingModule, CopyBaseline, …)
            # and any DataModule subclass can be selected with class_path.
            None, DEPDataModule, trainer_class=kwargs.pop("trainer_class", DEPTrainer), args=args, run=run,
            subclass_mode_model=True, subclass_mode_data=True,
            parser_kwargs={"parser_mode": "omegaconf"},
            save_config_kwargs={"overwrite": True},
            save_config_callback=kwargs.pop("save_config_callback", RedactingSaveConfigCallback),
            trainer_defaults=defaults, **kwargs,
        )

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.init_args.backbone", "data.init_args.tokenizer")
        parser.link_arguments("data.embedding_dim", "model.init_args.embedding_dim", apply_on="instantiate")
        # One seed per run: seed_everything also seeds the method (adapter init, sampling).
        parser.link_arguments("seed_everything", "model.init_args.seed", compute_fn=run_seed)
        parser.add_argument("--test_after_fit", type=bool, default=False,
                            help="after fit, run test with the best checkpoint (fit only)")
        parser.add_argument("--score_after_fit", type=list[str | bool] | None, default=None,
                            help="after fit, score the test split by likelihood under these conditions "
                                 "(true, swap, none, his_only, diff_only) with the best checkpoint (fit only)")
        parser.add_argument("--run_dir", type=str | None, default=None,
                            help="put this run's directory exactly here (sweeps use it): file loggers write "
                                 "<run_dir> itself, W&B keeps its files inside it")

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        if config is not None:
            refuse_zero_stage_3(config.get("trainer", {}).get("strategy"))
        if config is None or not config.get("run_dir"):
            return
        place_run(config, config["run_dir"])
        if self.subcommand != "fit":
            keep_fit_history(config["run_dir"])
        elif config.get("ckpt_path"):
            self._resumed_history = set_history_aside(config["run_dir"])

    # Checkpoints are read with weights_only=True: tensors and plain values, never pickled objects.
    # A DeepSpeed checkpoint folder also loads under any other strategy (checkpoints.py).
    def before_validate(self) -> None:
        config = self.config_init[self.subcommand]
        require_weights_only(config)
        read_folders_outside_deepspeed(self.trainer, config.get("ckpt_path"))  # no-op unless a DeepSpeed folder

    before_test = before_predict = before_score = before_validate

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "score": {"model", "datamodule"}}

    def before_fit(self) -> None:
        self.before_validate()
        # The frozen backbone is in eval mode on purpose; Lightning would warn about it (quiet.py).
        quiet_frozen_eval_modules(self.model)
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") == "last":
            found = last_checkpoint(self.trainer)
            if found is not None:  # RunSummary prints "[fit] resuming from <found>"
                config["ckpt_path"] = str(found)
                read_folders_outside_deepspeed(self.trainer, config["ckpt_path"])
        if config.get("ckpt_path"):
            self.trainer.callbacks.append(StoppedStaysStopped())
        aside = getattr(self, "_resumed_history", None)
        if aside is not None:
            self.trainer.callbacks.append(ResumedHistory(aside))

    def after_fit(self) -> None:
        if self.config.get(self.subcommand, {}).get("test_after_fit"):
            ckpt = ("best" if self.trainer.checkpoint_callback and self.trainer.checkpoint_callback.best_model_path
                    else None)
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt, weights_only=True)
        conditions = self.config.get(self.subcommand, {}).get("score_after_fit")
        if conditions:
            ckpt = ("best" if self.trainer.checkpoint_callback and self.trainer.checkpoint_callback.best_model_path
                    else None)
            self.trainer.score(self.model, datamodule=self.datamodule, ckpt_path=ckpt, conditions=conditions,
                               weights_only=True)


def refuse_zero_stage_3(strategy) -> None:
    """DeepSpeed ZeRO stage 3 is refused before anything is built.

    Stage 3 partitions every weight, the frozen LLM's included, across processes; generating
    then needs all ranks to decode in lock-step (``synced_gpus``) with ragged prompt counts,
    which the test and predict loops here do not do. The trainable part is small (about 30 M
    parameters at 7B), so DDP or ZeRO stage 1 / 2 fit wherever stage 3 would."""
    if isinstance(strategy, str):
        stage3 = strategy.startswith("deepspeed_stage_3")
    elif hasattr(strategy, "get"):  # class_path / init_args (a jsonargparse Namespace or a dict)
        init_args = strategy.get("init_args") or {}
        stage3 = str(strategy.get("class_path", "")).endswith("DeepSpeedStrategy") and init_args.get("stage") == 3
    else:
        stage3 = False
    if stage3:
        from dep_lightning.data.errors import ConfigError

        raise ConfigError("trainer.strategy", "DeepSpeed stage 3", "ZeRO stage 3 is not supported: it partitions "
                          "the frozen LLM, and generation would need every rank to decode in lock-step; use "
                          "configs/trainer/ddp.yaml, deepspeed_zero1.yaml or deepspeed_zero2.yaml")


def last_checkpoint(trainer) -> Path | None:
    """The newest ``last*.ckpt`` of this run's configuration, for ``fit --ckpt_path last``.

    Lightning looks for ``last`` only in the new run's own checkpoint folder; with a logger
    that starts a new ``version_N`` per run (the shipped configs) that folder is empty, and
    Lightning would start from scratch. This also searches every ``version_*/checkpoints/``
    under the logger's root and any fixed ``ModelCheckpoint(dirpath=...)``.
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    folders = [Path(cb.dirpath) for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath]
    root = getattr(trainer.logger, "root_dir", None) if trainer.logger is not None else None
    if root:
        folders += sorted(Path(root).glob("version_*/checkpoints"))
    # A DeepSpeed strategy saves each checkpoint as a folder (checkpoints.py).
    found = [p for folder in folders if folder.is_dir() for p in folder.glob("last*.ckpt")
             if p.is_file() or is_deepspeed_folder(p)]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def run_seed(seed_everything) -> int:
    """The method's seed from ``seed_everything`` (an int; ``true``/``null`` fall back to 0)."""
    return seed_everything if isinstance(seed_everything, int) and not isinstance(seed_everything, bool) else 0


FILE_LOGGERS = ("CSVLogger", "TensorBoardLogger")


def place_run(config, run_dir: str) -> None:
    """Point the configured loggers (and ``default_root_dir``) at ``run_dir``.

    The first logger decides ``trainer.log_dir``, the run directory: a CSV / TensorBoard
    logger gets ``save_dir/name/version`` = ``run_dir``; a W&B logger keeps its files in
    ``run_dir`` and takes its folder name as the run name.
    """

    path = Path(run_dir)
    trainer = config["trainer"]
    trainer["default_root_dir"] = str(path)
    loggers = trainer.get("logger")
    if loggers in (None, False, True):
        raise ValueError("--run_dir needs a configured logger (trainer.logger with class_path)")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        name = str(logger["class_path"]).rsplit(".", 1)[-1]
        init = logger["init_args"]
        if name in FILE_LOGGERS:
            init["save_dir"], init["name"], init["version"] = str(path.parent.parent), path.parent.name, path.name
        elif name == "WandbLogger":
            init["save_dir"], init["name"] = str(path), path.name
        else:
            raise ValueError(f"--run_dir does not know where {name} writes; use CSVLogger, TensorBoardLogger "
                             f"or WandbLogger")
