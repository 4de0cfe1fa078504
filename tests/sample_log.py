"""A callback for multi-process tests: which samples each process trained and tested on."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L


class SampleLog(L.Callback):
    """Writes ``<folder>/train-rank<R>.json`` (``[[epoch, batch_idx, [sample ids]], ...]``) when
    training ends and ``<folder>/test-rank<R>.json`` (``[sample ids]``) when testing ends."""

    def __init__(self, folder: str):
        self.folder = Path(folder)
        self.train: list = []
        self.test: list[str] = []

    def _dump(self, trainer, stage: str, payload) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        data = {"world_size": trainer.world_size, "samples": payload}
        (self.folder / f"{stage}-rank{trainer.global_rank}.json").write_text(json.dumps(data))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train.append([trainer.current_epoch, batch_idx, list(batch.sample_id)])

    def on_train_end(self, trainer, pl_module):
        self._dump(trainer, "train", self.train)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.test.extend(batch.sample_id)

    def on_test_end(self, trainer, pl_module):
        self._dump(trainer, "test", self.test)
