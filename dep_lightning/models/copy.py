"""Reference baselines that use no model at all.

``copy_recent`` answers with the user's most recent review (the last of the sample's
profile); ``copy_concat`` with the K retrieved history reviews joined oldest first. They
show how far text overlap metrics reward copying the user's own past words: a method
whose outputs are mostly echoed history should not beat them by much.

They run through the same DataModule, writer and tables as every other method:
``dep-lightning test --config configs/quickstart.yaml --config configs/baselines/copy_recent.yaml``.
"""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch

from dep_lightning.data.types import Batch
from dep_lightning.methods import MethodSpec, register
from dep_lightning.models.base import MethodMixin
from dep_lightning.models.generation import Generated, GenerationConfig, prediction_rows


@register(MethodSpec("copy_recent", "Copy-Recent", row="reference", order=10),
          MethodSpec("copy_concat", "Copy-Concat", row="reference", order=20))
class CopyBaseline(MethodMixin, L.LightningModule):
    """Predicts by copying history text.

    Args:
        mode: ``recent`` (the most recent review of the user's profile) or ``concat`` (the
            K retrieved reviews, ascending time, separated by a blank line).
        backbone: recorded in the manifest only (prompts are still tokenized with its
            tokenizer by the DataModule, which lets runs share the same samples).
        backbone_dtype, embedding_dim, generation, seed, backbone_options: unused; every method accepts the
            same common arguments, so one override file applies to any method.
    """

    def __init__(self, mode: Literal["recent", "concat"] = "recent", backbone: str = "smollm2-135m-instruct",
                 backbone_dtype: str = "auto", embedding_dim: int = 384,
                 generation: GenerationConfig = GenerationConfig(), seed: int = 0,
                 backbone_options: dict | None = None):
        super().__init__()
        if mode not in ("recent", "concat"):
            raise ValueError(f"mode must be 'recent' or 'concat', got {mode!r}")
        self.mode = mode
        self.method = f"copy_{mode}"
        self.save_hyperparameters(ignore=["generation"])
        # Lightning needs a device anchor; nothing is trained.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def predict_text(self, batch: Batch, i: int) -> str:
        if self.mode == "recent":
            return batch.latest[i]
        return "\n\n".join(batch.retrieved[i])

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        outputs = [Generated(self.predict_text(batch, i), 0, False) for i in range(len(batch.sample_id))]
        rows = prediction_rows(batch, outputs)
        for row in rows:
            row["generated_tokens"] = None  # nothing was generated
        return rows

    def test_step(self, batch: Batch, batch_idx: int) -> list[dict[str, Any]]:
        return self.predict_step(batch, batch_idx)

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        raise RuntimeError(f"{self.method} has nothing to train: run `dep-lightning test`")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        return None

    def configure_optimizers(self):
        return None
