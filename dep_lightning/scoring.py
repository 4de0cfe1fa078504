"""Likelihood scoring and the personalization gain (``dep-lightning score``).

Every test sample's reference review is scored by teacher forcing under each
counterfactual condition (``data/conditions.py``): its negative log-likelihood in nats,
summed and per target token. One forward pass per sample and condition, so the whole
test split is cheap compared with generation, and the same instrument applies to every
method that defines ``score_batch`` (DEP, the no-user control, PPlug, Non-Perso, RAG, PAG, DPL).

The personalization gain of a run is, per sample, ``nll_swap - nll_true`` in nats per
token (positive: the user's own history makes the reference more likely than another
user's). It is reported per category and overall as a mean with a 95 % percentile
bootstrap interval and a two-sided paired bootstrap test (``results/stats.py``); every
other condition gets the same against ``true``.

Files (``docs/runs.md``): ``scores/test.jsonl`` (one row per sample and condition:
``sample_id``, ``user_id``, ``category``, ``condition``, ``nll``, ``tokens``) and a
``likelihood`` block merged into the run's ``metrics.json``.

Work is not done twice: a batch whose inputs equal an earlier condition's is scored once;
the batches scored so far are kept (:class:`ScoreCache`) so that a killed run resumes; and
with a shared folder (``ScoreWriter(shared=...)``, by default ``$DEP_LIGHTNING_SHARED_SCORES``,
which ``dep-lightning grid`` sets to ``<root>/.backbone-scores``) the batches the frozen
backbone alone scores (a trained method's ``none`` condition, whose prompts hold no soft
prompt) are computed once for all runs with the same backbone, precision and inputs.
"""

from __future__ import annotations

import json
import os
import platform
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np

from dep_lightning.data.conditions import CONDITIONS, check_conditions
from dep_lightning.data.errors import required_field
from dep_lightning.journal import SHARED_SCORES_ENV, append_jsonl, drop_torn_tail, read_jsonl_prefix

DEFAULT_CONDITIONS = ("true", "swap", "none")


def _per_token(rows: Sequence[dict[str, Any]]) -> np.ndarray:
    return np.array([r["nll"] / max(1, r["tokens"]) for r in rows], dtype=np.float64)


def aligned(rows: Sequence[dict[str, Any]], conditions: Sequence[str]) -> tuple[list[str], dict[str, list[dict]]]:
    """Rows by condition, every condition in the same sample order; each sample must appear
    exactly once per condition with the same token count (the reference does not change)."""
    by: dict[str, dict[str, dict]] = defaultdict(dict)
    for row in rows:
        seen = by[row["condition"]]
        if row["sample_id"] in seen:
            raise ValueError(f"sample {row['sample_id']} scored twice under condition {row['condition']!r}")
        seen[row["sample_id"]] = row
    ids = sorted(by[conditions[0]])
    for c in conditions:
        if sorted(by[c]) != ids:
            raise ValueError(f"condition {c!r} scored {len(by[c])} samples, {conditions[0]!r} {len(ids)}: "
                             f"the conditions must cover the same samples")
        bad = [i for i in ids if by[c][i]["tokens"] != by[conditions[0]][i]["tokens"]]
        if bad:
            raise ValueError(f"sample {bad[0]}: the reference has a different token count under {c!r}")
    return ids, {c: [by[c][i] for i in ids] for c in conditions}


def gain_summary(true: np.ndarray, other: np.ndarray, resamples: int, seed: int) -> dict[str, Any]:
    """Mean of ``other - true`` (nats/token) with its 95 % bootstrap interval and paired p-value."""
    from dep_lightning.results.stats import MetricSamples, bootstrap_ci, paired_bootstrap

    diff = MetricSamples("gain", other - true)
    interval = bootstrap_ci(diff, resamples, seed)
    test = paired_bootstrap(MetricSamples("nll", other), MetricSamples("nll", true), resamples, seed)
    return {"gain": float(np.mean(other - true)), "gain_ci95": [interval.low, interval.high],
            "p_value": test.p_value, "n": int(true.shape[0])}


def summarize(rows: Sequence[dict[str, Any]], conditions: Sequence[str] | None = None, resamples: int = 1000,
              seed: int = 0) -> dict[str, Any]:
    """The ``likelihood`` block of ``metrics.json``: per category and overall, each condition's
    mean NLL per token (and the token-weighted one), and each condition's gain over ``true``."""
    conditions = tuple(conditions or [c for c in CONDITIONS if any(r["condition"] == c for r in rows)])
    ids, by = aligned(rows, conditions)
    categories = sorted({r["category"] for r in by[conditions[0]]})
    out: dict[str, Any] = {"conditions": list(conditions), "unit": "nats per target token", "categories": {}}
    for name in [*categories, None]:
        keep = [i for i, r in enumerate(by[conditions[0]]) if name is None or r["category"] == name]
        block: dict[str, Any] = {"n": len(keep), "tokens": int(sum(by[conditions[0]][i]["tokens"] for i in keep))}
        values = {c: _per_token([by[c][i] for i in keep]) for c in conditions}
        for c in conditions:
            chosen = [by[c][i] for i in keep]
            block[f"nll_{c}"] = float(values[c].mean())
            block[f"nll_{c}_token_weighted"] = float(sum(r["nll"] for r in chosen) / max(1, block["tokens"]))
        if "true" in conditions:
            block["gains"] = {c: gain_summary(values["true"], values[c], resamples, seed)
                              for c in conditions if c != "true"}
        if name is None:
            out["overall"] = block
        else:
            out["categories"][name] = block
    return out


def summary_table(summary: dict[str, Any]) -> str:
    """Markdown: per category and overall, NLL per condition and the gain of each over ``true``."""
    conditions = summary["conditions"]
    others = [c for c in conditions if c != "true"] if "true" in conditions else []
    head = ["set", "n", *[f"NLL {c}" for c in conditions], *[f"{c} - true [95% CI]" for c in others]]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(head) - 2)]
    for name, block in [*sorted(summary["categories"].items()), ("overall", summary["overall"])]:
        cells = [name, str(block["n"]), *[f"{block[f'nll_{c}']:.4f}" for c in conditions]]
        for c in others:
            g = block["gains"][c]
            mark = "†" if g["p_value"] < 0.05 else ""
            cells.append(f"{g['gain']:+.4f}{mark} [{g['gain_ci95'][0]:+.4f}, {g['gain_ci95'][1]:+.4f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def once_per_condition(rows: list[dict[str, Any]], world_size: int) -> list[dict[str, Any]]:
    """Rows with the copies that padding adds under several processes removed (the first of
    each sample and condition is kept); with one process nothing is padded and rows pass as they are."""
    if world_size < 2:
        return rows
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        seen.setdefault((row["sample_id"], row["condition"]), row)
    return list(seen.values())


class ScoreCache(dict):
    """The batches a scoring run has computed (inputs digest -> summed NLL and token counts of
    the batch's samples), appended to a file as each is computed, so that a scoring run killed
    part-way and run again on the same weights computes only the batches it lacks.

    :class:`ScoreWriter` opens it in the run's ``scores/`` folder when the test loop starts
    (the checkpoint is loaded by then) and deletes its files once ``scores/test.jsonl`` is
    written. One file per weights and writer, ``partial-<weights digest>-<writer>.jsonl``
    (``rank<r>`` for a run's processes; host, pid and rank in a folder runs share); every
    process reads all of them. A last line cut short by the kill is ignored; any other
    line that is not JSON is an error naming the file and line (delete the file to score
    those batches again). The values read back are the ones computed, bit for bit.
    """

    def __init__(self, folder: Path, weights: str, writer: str = "rank0"):
        import torch

        super().__init__()
        self.folder = Path(folder)
        self.path = self.folder / f"partial-{weights}-{writer}.jsonl"
        for path in sorted(self.folder.glob(f"partial-{weights}-*.jsonl")):
            for number, row in enumerate(read_jsonl_prefix(path), 1):
                where = f"{path}:{number}"
                key = required_field(row, "inputs", where)
                nll, tokens = required_field(row, "nll", where), required_field(row, "tokens", where)
                super().__setitem__(key, (torch.tensor(nll, dtype=torch.float64),
                                          torch.tensor(tokens, dtype=torch.int64)))
        drop_torn_tail(self.path)  # this process appends here: start after its last complete line
        self.restored, self.computed, self.hits = len(self), 0, 0

    def __getitem__(self, key: str):
        self.hits += 1
        return super().__getitem__(key)

    def __setitem__(self, key: str, value) -> None:
        super().__setitem__(key, value)
        self.computed += 1
        nll, tokens = value
        append_jsonl(self.path, [{"inputs": key, "nll": [float(x) for x in nll], "tokens": [int(t) for t in tokens]}])

    @staticmethod
    def remove(folder: Path) -> None:
        for path in Path(folder).glob("partial-*-rank*.jsonl"):
            path.unlink()


class ScoreWriter(L.Callback):
    """Collects the rows of a scoring test run and writes ``scores/test.jsonl`` and the
    ``likelihood`` block of ``metrics.json`` (merged into an existing one), plus
    ``manifest.json`` when the run directory has none yet.

    Args:
        resamples: bootstrap resamples of the intervals and tests.
        seed: bootstrap seed.
    """

    def __init__(self, resamples: int = 1000, seed: int = 0, shared: str | None = None):
        self.resamples, self.seed = resamples, seed
        self.shared = shared if shared is not None else os.environ.get(SHARED_SCORES_ENV) or None
        self._buffer: list[dict[str, Any]] = []
        self.summary: dict[str, Any] | None = None
        self.folder: Path | None = None

    @staticmethod
    def active(pl_module) -> bool:
        return getattr(pl_module, "scoring_conditions", None) is not None

    def on_test_start(self, trainer, pl_module) -> None:
        if not self.active(pl_module):
            return
        from dep_lightning.callbacks.predictions import run_dir
        from dep_lightning.fingerprints import weights_digest

        cache = ScoreCache(run_dir(trainer) / "scores", weights_digest(pl_module), f"rank{trainer.global_rank}")
        pl_module.scored_inputs = cache
        if cache.restored:
            print(f"[score] {cache.restored} batch(es) scored by an interrupted run of these weights restored from "
                  f"{cache.folder}", flush=True)
        pl_module.shared_scores = None
        if self.shared and hasattr(pl_module, "backbone"):
            from dep_lightning.fingerprints import backbone_digest

            backbone = backbone_digest(pl_module, context=str(trainer.precision))
            writer = f"{platform.node()}-{os.getpid()}-rank{trainer.global_rank}"
            pl_module.shared_scores = ScoreCache(Path(self.shared), f"backbone-{backbone}", writer)
            print(f"[score] batches the frozen backbone alone scores are shared in {self.shared} "
                  f"({pl_module.shared_scores.restored} there)", flush=True)

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._buffer = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.active(pl_module) and outputs:
            self._buffer.extend(outputs)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        if not self.active(pl_module):
            return
        from dep_lightning.atomic import write_json
        from dep_lightning.callbacks.evaluation import build_manifest
        from dep_lightning.callbacks.predictions import all_rows, run_dir, write_jsonl

        # One row per sample and condition: a process without a batch of its own scored a copy
        # of the first batch (DEPDataModule._needs_padding); aligned() rejects any other repeat.
        rows = once_per_condition(all_rows(trainer, self._buffer), trainer.world_size)
        self._buffer = []
        self.folder = run_dir(trainer)  # a collective under DDP: every process asks
        if not trainer.is_global_zero:
            return
        order = {c: i for i, c in enumerate(CONDITIONS)}
        rows.sort(key=lambda r: (r["sample_id"], order[r["condition"]]))
        self.summary = summarize(rows, pl_module.scoring_conditions, self.resamples, self.seed)
        folder = Path(self.folder)
        write_jsonl(folder / "scores" / "test.jsonl", rows)
        ScoreCache.remove(folder / "scores")
        metrics_path = folder / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        metrics["likelihood"] = self.summary
        diagnostics = pl_module.diagnostics() if callable(getattr(pl_module, "diagnostics", None)) else {}
        if diagnostics:
            metrics["diagnostics"] = diagnostics
        write_json(metrics_path, metrics)
        if not (folder / "manifest.json").is_file():
            write_json(folder / "manifest.json", build_manifest(trainer, pl_module, folder))
        overall = {f"score/{c}": v for c, v in self.summary["overall"].items() if c.startswith("nll_")}
        overall.update({f"score/gain_{c}": g["gain"] for c, g in self.summary["overall"].get("gains", {}).items()})
        for logger in trainer.loggers:
            logger.log_metrics(overall, step=trainer.global_step)
        print("\n" + summary_table(self.summary) + f"\nscores: {folder / 'scores' / 'test.jsonl'}\n"
              f"metrics: {metrics_path}", flush=True)


class DEPTrainer(L.Trainer):
    """Lightning's Trainer plus :meth:`score` (``dep-lightning score``)."""

    def score(self, model: L.LightningModule | None = None, datamodule: L.LightningDataModule | None = None,
              ckpt_path: str | None = None, conditions: list[str | bool] = list(DEFAULT_CONDITIONS),
              weights_only: bool | None = None) -> dict[str, Any] | None:
        """Score every test reference by likelihood under each condition (true, swap, none, his_only, diff_only).

        Runs Lightning's test loop with one teacher-forced dataloader per condition over the
        whole test split (``data.init_args.score_limit`` caps it) and writes
        ``scores/test.jsonl`` and the ``likelihood`` block of ``metrics.json``.

        Args:
            model: the method (must define ``score_batch``).
            datamodule: a DEPDataModule.
            ckpt_path: checkpoint to score (``best`` / ``last`` / a path); ``None`` scores the model as built.
            conditions: conditions to score; ``true`` first is the reference of every gain.
            weights_only: passed to checkpoint loading.
        """
        model = model if model is not None else self.lightning_module
        conditions = check_conditions(conditions)
        if not callable(getattr(model, "score_batch", None)):
            raise ValueError(f"{type(model).__name__} has no likelihood to score (a method without a language "
                             f"model, such as the copy baselines)")
        if not hasattr(datamodule, "scoring_conditions"):
            raise ValueError("score needs a DEPDataModule (it builds the conditions' inputs)")
        writer = next((cb for cb in self.callbacks if isinstance(cb, ScoreWriter)), None)
        if writer is None:
            writer = ScoreWriter()
            self.callbacks.append(writer)
        model.scoring_conditions = datamodule.scoring_conditions = conditions
        model.scored_inputs = {}  # batches identical to an earlier condition's are scored once
        try:
            self.test(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=weights_only)
        finally:
            model.scoring_conditions = datamodule.scoring_conditions = None
            model.scored_inputs = None
        return writer.summary
