"""Dataset statistics in the form of the paper's table 4.

Profile size is the number of history reviews; output length is the target review's
length in characters (the paper's table 4 reports ~1,600 for Amazon 2023).
"""

from __future__ import annotations

import numpy as np

from dep_lightning.data.samples import build_samples
from dep_lightning.data.schema import SPLITS, PreparedData, Review

Shape = tuple[int, int]  # (profile size, output length in chars) of one row


def _shape(history: tuple[Review, ...], target: Review) -> Shape:
    return len(history), len(target.text)


def summarize(shapes: list[Shape]) -> dict[str, float]:
    """Row count and mean / sample std of profile size and output length."""
    array = np.asarray(shapes, dtype=np.float64).reshape(-1, 2)
    ddof = 1 if len(array) > 1 else 0
    mean = array.mean(axis=0) if len(array) else np.full(2, np.nan)
    std = array.std(axis=0, ddof=ddof) if len(array) else np.full(2, np.nan)
    return {"rows": len(array), "profile_mean": float(mean[0]), "profile_std": float(std[0]),
            "output_chars_mean": float(mean[1]), "output_chars_std": float(std[1])}


def _markdown(title: str, rows: dict[str, dict[str, float]]) -> str:
    lines = [f"| {title} | #data | Profile Size | Output Length (chars) |", "|---|---:|---:|---:|"]
    for name, s in rows.items():
        if s["rows"] == 0:
            lines.append(f"| {name} | 0 | - | - |")
        else:
            lines.append(f"| {name} | {s['rows']} | {s['profile_mean']:.2f} ± {s['profile_std']:.2f} "
                         f"| {s['output_chars_mean']:.2f} ± {s['output_chars_std']:.2f} |")
    return "\n".join(lines)


def dep_stats(data: PreparedData, *, val_size: int = 512, seed: int = 0) -> dict[str, dict[str, float]]:
    """Paper table 4: merged training set, sampled validation set, test set per category."""
    sets = {"Training": build_samples(data, "train"),
            "Validation": build_samples(data, "val", val_size=val_size, seed=seed)}
    sets.update({f"Test {c}": build_samples(data, "test", categories=[c]) for c in data.categories})
    return {name: summarize([_shape(s.history, s.target) for s in samples]) for name, samples in sets.items()}


def dpl_stats(data: PreparedData) -> dict[str, dict[str, float]]:
    """Every DPL-format split of every category, all rows."""
    return {f"{c} {split}": summarize([_shape(r.profile, r.target) for r in data.split(c, split)])
            for c in data.categories for split in SPLITS}


def dep_table(data: PreparedData, *, val_size: int = 512, seed: int = 0) -> str:
    return _markdown("DEP set", dep_stats(data, val_size=val_size, seed=seed))


def dpl_table(data: PreparedData) -> str:
    return _markdown("DPL split", dpl_stats(data))
