"""``dep-lightning embed --config …``: fill the embedding cache of a run's data, alone.

Reads the same configs as ``fit`` (only ``data`` is instantiated: no backbone is loaded)
and encodes every text the run will look up — train / val / test histories, the peer
corpus, user texts where a user slot needs them — into the cache that ``fit`` then reads
(``data.init_args.cache_dir``, keyed by the embedder's model content and settings, so the
same config finds the same vectors). The encoder's compute dtype is the embedder's
(``data.init_args.embedder.dtype``: ``bfloat16`` on GPUs halves the time and memory;
stored vectors are float32 either way), and it runs on ``--embed.devices`` (default
``auto``: every visible GPU, one process each; one process on CPU), with a progress line
every 30 s. Under several devices every process runs this command (Lightning's launcher
starts them) and they share the work (``EmbeddingCache.ensure``).

    dep-lightning embed --config configs/paper/dep.yaml                 # all visible GPUs
    dep-lightning embed --config configs/quickstart.yaml --embed.devices 1

Inside ``fit`` the DataModule's ``prepare_data`` does the same on one device per node, so
with a warm cache a fit spends no time encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning as L

from dep_lightning.training import DEPLightningCLI


@dataclass
class EncoderDevices:
    """Where the encoder runs (``--embed.*``); fit's own trainer settings do not apply to it.

    Args:
        accelerator: accelerator of the encoder.
        devices: devices of the encoder (auto: every visible GPU, one process each; one process on CPU).
        strategy: strategy of the encoder.
    """

    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"


class EmbedCLI(DEPLightningCLI):
    """The fit parser (every config a fit takes parses here) that instantiates the data only."""

    def __init__(self, args=None, **kwargs):
        self.summary: dict[str, Any] | None = None
        super().__init__(args=args, run=False, save_config_callback=None, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_class_arguments(EncoderDevices, "embed")

    def instantiate_classes(self) -> None:
        from jsonargparse import ArgumentParser

        parser = ArgumentParser(parser_mode="omegaconf")
        parser.add_subclass_arguments(L.LightningDataModule, "data", required=True)
        config = parser.parse_object({"data": self.config["data"].as_dict()})
        self.datamodule = parser.instantiate_classes(config)["data"]
        self.model = self.trainer = None

    def embed(self) -> dict[str, Any]:
        dm = self.datamodule
        if not hasattr(dm, "cache") or not hasattr(dm, "prepare_data"):
            raise TypeError(f"{type(dm).__name__} has no embedding cache to fill")
        options = self.config["embed"]
        cache = dm.cache
        cache.trainer_kwargs.update(accelerator=options.accelerator, devices=options.devices,
                                    strategy=options.strategy)
        before = len(cache)
        dm.prepare_data()  # EmbeddingCache.ensure leaves the cache refreshed
        self.summary = {"folder": str(cache.folder), "embedder": cache.embedder.folder.name,
                        "dtype": cache.embedder.dtype, "dim": cache.dim, "vectors_before": before,
                        "vectors": len(cache), "encoded_here": cache.encoded_texts}
        return self.summary


def embed(argv: list[str]) -> dict[str, Any] | None:
    """Run ``dep-lightning embed`` with ``argv`` (everything after ``embed``); prints one
    summary line on the primary process and returns the summary (None on other ranks)."""
    import os

    from dep_lightning.quiet import quiet_framework

    quiet_framework()  # framework messages that never apply to a dep-lightning run (quiet.py)
    cli = EmbedCLI(args=argv)
    summary = cli.embed()
    if int(os.environ.get("LOCAL_RANK", "0")) != 0 or int(os.environ.get("NODE_RANK", "0")) != 0:
        return None
    print(f"embed: {summary['vectors']:,} vectors (dim {summary['dim']}, {summary['embedder']}, "
          f"{summary['dtype']}) in {summary['folder']}; {summary['vectors'] - summary['vectors_before']:,} "
          f"new", flush=True)
    return summary
