"""Generation-based validation metrics, and what identifies a run (``manifest.json``).

:class:`GenerationEvaluator` generates for (a capped number of) validation samples every
N epochs and logs ``val/rouge1``, ``val/meteor``, ``val/bleu`` (and ``val/bertscore``), so
``ModelCheckpoint(monitor="val/meteor", mode="max")`` keeps the best checkpoint by METEOR
as the paper did. Metric states are synced across processes and deduplicated by sample id.

:func:`build_manifest` and :func:`metrics_table` are shared by the test run's recorder
(``callbacks/recorder.py``), likelihood scoring and ``evaluate``; the config hash comes from
``callbacks/predictions.py``, next to the run directory it reads.
"""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L

from dep_lightning.axes import BY_KEY
from dep_lightning.callbacks.predictions import config_hash
from dep_lightning.manifest import RunManifest
from dep_lightning.metrics import TextMetrics


class GenerationEvaluator(L.Callback):
    """Logs generation metrics at the end of validation.

    Args:
        every_n_epochs: evaluate on epochs where ``(epoch + 1) % every_n_epochs == 0``.
        max_samples: cap on validation samples generated for (per process); ``None`` = all.
        bertscore: also compute BERTScore (slow on CPU).
    """

    def __init__(self, every_n_epochs: int = 1, max_samples: int | None = None, bertscore: bool = False):
        self.every_n_epochs, self.max_samples, self.bertscore = every_n_epochs, max_samples, bertscore
        self.metrics: TextMetrics | None = None
        self.seen = 0

    def _due(self, trainer: L.Trainer) -> bool:
        return not trainer.sanity_checking and (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.metrics = TextMetrics(bertscore=self.bertscore) if self._due(trainer) else None
        self.seen = 0

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.metrics is None or (self.max_samples is not None and self.seen >= self.max_samples):
            return
        texts = pl_module.generate(batch.prompt, key=batch.sample_id[0])
        self.metrics.update(texts, batch.reference, ids=batch.sample_id)
        self.seen += len(texts)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self.metrics is None or self.seen == 0:
            return
        for name, value in self.metrics.compute().items():
            pl_module.log(f"val/{name}", float(value), sync_dist=False, prog_bar=name == "meteor")
        self.metrics = None


def code_version() -> str:
    """Package version plus the git commit (and ``.dirty``) when run from a checkout."""
    import dep_lightning

    version = dep_lightning.__version__
    root = Path(dep_lightning.__file__).resolve().parents[1]
    if (root / ".git").exists():
        try:
            sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True, timeout=10, check=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            version += f"+g{sha}" + (".dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            pass
    return version


def environment(pl_module: L.LightningModule) -> dict[str, Any]:
    """Where a run computed: the backbone's dtype as resolved (``auto`` differs by machine),
    the attention kernel and gradient checkpointing (``backbone_options``), the device, the
    CPU model and whether it has native bf16, the torch version."""
    import torch

    from dep_lightning.models.backbone import cpu_has_native_bf16, cpu_model

    backbone = getattr(pl_module, "backbone", None)
    dtype = next(backbone.parameters()).dtype if backbone is not None else None
    device = pl_module.device
    return {
        "backbone_dtype": str(dtype).removeprefix("torch.") if dtype is not None else None,
        **backbone_environment(pl_module),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "cpu": cpu_model(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "torch": torch.__version__,
    }


def backbone_environment(pl_module: L.LightningModule) -> dict[str, Any]:
    options = getattr(pl_module, "backbone_options", None)
    if options is None:  # no backbone (copy baselines)
        return {}
    return {"attn_implementation": options.attn_implementation,
            "gradient_checkpointing": options.gradient_checkpointing,
            "generation_backend": pl_module.generation_backend()}


def build_manifest(trainer: L.Trainer, pl_module: L.LightningModule, folder: Path | None = None) -> dict[str, Any]:
    """``manifest.json`` (docs/runs.md): method, ablation keys, method options, seed, backbone,
    data, code version and the computing environment."""
    info = pl_module.method_info() if hasattr(pl_module, "method_info") else {"method": type(pl_module).__name__}
    described = trainer.datamodule.describe() if hasattr(trainer.datamodule, "describe") else {}
    # Model-side axes from the method (the optional ones only when it reports them), data-side from the data.
    ablation = {axis.key: info.get(axis.key) for axis in BY_KEY.values() if axis.side == "model"
                and (axis.required or axis.key in info)}
    ablation.update(described.get("ablation", {}))
    seed = os.environ.get("PL_GLOBAL_SEED")
    count = getattr(pl_module, "trainable_parameter_count", None)
    return RunManifest(
        method=info["method"],
        ablation=ablation,
        options=pl_module.method_options() if hasattr(pl_module, "method_options") else {},
        seed=int(seed) if seed is not None else None,
        backbone=pl_module.hparams.get("backbone"),
        data=described.get("data", {}),
        trainable_parameters=count() if count else None,
        code_version=code_version(),
        config_hash=config_hash(trainer, pl_module, folder),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        environment=environment(pl_module),
    ).to_dict()


def metrics_table(scores: dict[str, Any]) -> str:
    keys = [k for k in ("rouge1", "meteor", "bleu", "bertscore") if k in scores["overall"]]
    lines = ["| set | n | " + " | ".join(keys) + " |", "|---|---:|" + "---:|" * len(keys)]
    rows = [*sorted(scores["categories"].items()), ("overall", scores["overall"])]
    for name, values in rows:
        lines.append(f"| {name} | {values['n']} | " + " | ".join(f"{values[k]:.4f}" for k in keys) + " |")
    return "\n".join(lines)
