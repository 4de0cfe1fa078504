"""The results registry: run directories (docs/runs.md) read, validated and grouped by seed.

A run is a folder holding ``manifest.json`` and ``metrics.json``; ``predictions/test.jsonl``
(per-sample scores) is optional and only needed for confidence intervals and significance
tests, and so is ``scores/test.jsonl`` (per-sample likelihoods of ``dep-lightning score``)
for the personalization table. Every file is validated field by field; a bad value stops with an
:class:`~dep_lightning.data.errors.InputError` naming the file, the field and the value.

Runs that differ only in their seed form a :class:`RunGroup`: everything else in the
manifest -- method, every ablation key, backbone and the data description -- must match.
(``created``, ``code_version``, ``config_hash``, ``trainable_parameters`` and
``environment`` identify a run, not a configuration, and are ignored for grouping; the
method's ``options`` are part of the configuration.)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from dep_lightning.data.conditions import CONDITIONS
from dep_lightning.data.errors import InputError, json_error, json_object, required_field
from dep_lightning.manifest import RUN_IDENTITY, RunManifest
from dep_lightning.results.stats import MetricSamples, bleu_statistics

QUALITY_METRICS = ("rouge1", "meteor", "bleu", "bertscore")
PER_SAMPLE_SCORES = ("rouge1", "meteor", "bertscore")
HYGIENE_METRICS = ("copy_rate", "mean_longest_copy", "limit_rate", "echo_rate")
# Per-sample prediction fields whose means are the hygiene rates.
HYGIENE_FIELDS = {"copy_rate": "copied", "mean_longest_copy": "longest_copy", "limit_rate": "hit_limit",
                  "echo_rate": "echo"}
PREDICTIONS = Path("predictions") / "test.jsonl"
SCORES = Path("scores") / "test.jsonl"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _type_name(value: Any) -> str:
    return type(value).__name__


# --------------------------------------------------------------------------------------
# Validation



def validate_manifest(manifest: Any, where: str) -> dict:
    """The manifest as read, after :meth:`~dep_lightning.manifest.RunManifest.parse` checked it."""
    RunManifest.parse(manifest, where)
    return manifest


def _validate_scores(block: Any, where: str, name: str, allowed: Iterable[str]) -> dict:
    block = json_object(block, where, name)
    n = required_field(block, "n", where, name + ".")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise InputError(where, None, f"{name}.n", n, "wrong type", "expected an integer >= 0")
    for key in allowed:
        if key in block and not _is_number(block[key]):
            raise InputError(where, None, f"{name}.{key}", block[key], "wrong type", "expected a finite number")
    return block


def validate_metrics(metrics: Any, where: str) -> dict:
    """``metrics.json``; a score-only run (``dep-lightning score`` in a run directory of its
    own) holds a ``likelihood`` block and no text metrics (no ``categories``, no ``overall``)."""
    metrics = json_object(metrics, where, "(top level)")
    if metrics.get("likelihood") is not None and "categories" not in metrics and "overall" not in metrics:
        validate_likelihood(metrics["likelihood"], where)
        return metrics
    categories = json_object(required_field(metrics, "categories", where), where, "categories")
    for category, block in categories.items():
        _validate_scores(block, where, f"categories.{category}", QUALITY_METRICS)
    _validate_scores(required_field(metrics, "overall", where), where, "overall", QUALITY_METRICS)
    if metrics.get("hygiene") is not None:
        _validate_scores(metrics["hygiene"], where, "hygiene", HYGIENE_METRICS)
    uniqueness = metrics.get("uniqueness")
    if uniqueness is not None:
        uniqueness = json_object(uniqueness, where, "uniqueness")
        for half in ("unique", "non_unique"):
            _validate_scores(required_field(uniqueness, half, where, "uniqueness."), where, f"uniqueness.{half}",
                             QUALITY_METRICS)
    if metrics.get("likelihood") is not None:
        validate_likelihood(metrics["likelihood"], where)
    return metrics


def _finite(block: Mapping, key: str, where: str, name: str) -> float:
    value = required_field(block, key, where, name + ".")
    if not _is_number(value):
        raise InputError(where, None, f"{name}.{key}", value, "wrong type", "expected a finite number")
    return float(value)


def validate_likelihood(block: Any, where: str) -> dict:
    """The ``likelihood`` block of ``dep-lightning score`` (``dep_lightning/scoring.py``)."""
    block = json_object(block, where, "likelihood")
    conditions = required_field(block, "conditions", where, "likelihood.")
    if not isinstance(conditions, list) or not conditions or len(set(map(str, conditions))) != len(conditions):
        raise InputError(where, None, "likelihood.conditions", conditions, "wrong type",
                         "expected a non-empty list of distinct condition names")
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise InputError(where, None, "likelihood.conditions", unknown[0], "unknown condition",
                         f"expected one of {', '.join(CONDITIONS)}")
    categories = json_object(block.get("categories", {}), where, "likelihood.categories")
    parts = [(f"likelihood.categories.{c}", part) for c, part in categories.items()]
    parts.append(("likelihood.overall", required_field(block, "overall", where, "likelihood.")))
    for name, part in parts:
        part = _validate_scores(part, where, name, ())
        for condition in conditions:
            _finite(part, f"nll_{condition}", where, name)
        gains = json_object(part.get("gains") or {}, where, f"{name}.gains")
        for condition, gain in gains.items():
            if condition not in conditions or condition == "true":
                raise InputError(where, None, f"{name}.gains", condition, "unknown condition",
                                 "expected a scored condition other than true")
            gain = json_object(gain, where, f"{name}.gains.{condition}")
            _finite(gain, "gain", where, f"{name}.gains.{condition}")
            p_value = _finite(gain, "p_value", where, f"{name}.gains.{condition}")
            if not 0 < p_value <= 1:
                raise InputError(where, None, f"{name}.gains.{condition}.p_value", p_value, "out of range",
                                 "expected 0 < p <= 1")
            interval = required_field(gain, "gain_ci95", where, f"{name}.gains.{condition}.")
            if not (isinstance(interval, list) and len(interval) == 2 and all(map(_is_number, interval))):
                raise InputError(where, None, f"{name}.gains.{condition}.gain_ci95", interval, "wrong type",
                                 "expected [low, high], two finite numbers")
    return block


def read_json(path: Path) -> Any:
    if path.is_dir():
        raise InputError(str(path), None, None, str(path), "is a directory", "expected a JSON file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(str(path), None, None, exc.object[exc.start : exc.end], "undecodable bytes") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise json_error(str(path), text, exc) from None
    except RecursionError:  # json's parser recurses per nesting level
        raise InputError(str(path), None, None, text[:80], "malformed JSON", "nested too deeply") from None


# --------------------------------------------------------------------------------------
# Per-sample predictions


@dataclass
class Samples:
    """The per-sample part of ``predictions/test.jsonl`` that tables need.

    Texts are not kept (a run's outputs and references can be large): BLEU statistics are
    computed from the file, once, the first time a BLEU cell needs them.
    """

    path: Path
    ids: list[str]
    categories: np.ndarray  # str, one per sample
    scores: dict[str, np.ndarray]  # rouge1 / meteor (/ bertscore): present when every row has it
    hygiene: dict[str, np.ndarray]  # copy_rate -> copied, ...: present when every row has the field

    @cached_property
    def bleu_stats(self) -> np.ndarray:
        predictions, references = [], []
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)  # validated by read_predictions
                    predictions.append(row["prediction"])
                    references.append(row["reference"])
        if len(predictions) != len(self.ids):
            raise InputError(str(self.path), None, None, len(predictions), "file changed while reading",
                             f"expected {len(self.ids)} rows")
        return bleu_statistics(predictions, references)

    def values(self, metric: str) -> np.ndarray | None:
        """``[n]`` per-sample values (``[n, 10]`` statistics for BLEU) or None when not recorded."""
        if metric == "bleu":
            return self.bleu_stats
        if metric in self.scores:
            return self.scores[metric]
        return self.hygiene.get(metric)


def _numbered_lines(path: Path):
    """(line number, line) streamed; undecodable bytes stop with the file named."""
    with open(path, encoding="utf-8") as handle:
        try:
            yield from enumerate(handle, start=1)
        except UnicodeDecodeError as exc:
            # Decoding runs ahead of the line iterator, so the exact line is not known.
            raise InputError(str(path), None, None, exc.object[exc.start : exc.end], "undecodable bytes") from None


def _json_rows(path: Path, required: tuple[str, ...]):
    """(line number, object) of a JSON-lines file; blank lines skipped, each object checked
    for the ``required`` fields. Bad lines stop with the file, line and field named."""
    where = str(path)
    for number, line in _numbered_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(where, number, None, line.strip(), "malformed JSON", exc.msg) from None
        except RecursionError:  # json's parser recurses per nesting level
            raise InputError(where, number, None, line.strip(), "malformed JSON", "nested too deeply") from None
        if not isinstance(row, dict):
            raise InputError(where, number, None, row, "wrong type", "expected an object per line")
        for name in required:
            if name not in row:
                raise InputError(where, number, name, None, "missing field")
        yield number, row


def seed_statistics(values: list[float]) -> tuple[float, float | None, int]:
    """Mean, sample standard deviation (None for one seed) and count of a cell's per-seed values."""
    mean = math.fsum(values) / len(values)
    return mean, float(np.std(values, ddof=1)) if len(values) > 1 else None, len(values)


def read_predictions(path: Path) -> Samples:
    ids: list[str] = []
    categories: list[str] = []
    scores: dict[str, list[float]] = {name: [] for name in PER_SAMPLE_SCORES}
    hygiene: dict[str, list[float]] = {name: [] for name in HYGIENE_FIELDS}
    seen: dict[str, int] = {}
    where = str(path)
    for number, row in _json_rows(path, ("sample_id", "category", "prediction", "reference")):
        for name in ("sample_id", "category", "prediction", "reference"):
            if not isinstance(row[name], str):
                raise InputError(where, number, name, row[name], "wrong type", "expected a string")
        sample_id = row["sample_id"]
        if sample_id in seen:
            raise InputError(where, number, "sample_id", sample_id, "duplicate sample",
                             f"first seen on line {seen[sample_id]}")
        seen[sample_id] = number
        row_scores = row.get("scores")
        if not isinstance(row_scores, dict):
            raise InputError(where, number, "scores", row_scores, "missing field" if "scores" not in row
                             else "wrong type", "expected per-sample scores {rouge1, meteor[, bertscore]}")
        for name in PER_SAMPLE_SCORES:
            if name in row_scores:
                if not _is_number(row_scores[name]):
                    raise InputError(where, number, f"scores.{name}", row_scores[name], "wrong type",
                                     "expected a finite number")
                scores[name].append(float(row_scores[name]))
            elif name != "bertscore":
                raise InputError(where, number, f"scores.{name}", None, "missing field")
        for metric, name in HYGIENE_FIELDS.items():
            if name in row and row[name] is not None:
                if not (_is_number(row[name]) or isinstance(row[name], bool)):
                    raise InputError(where, number, name, row[name], "wrong type", "expected a number or boolean")
                hygiene[metric].append(float(row[name]))
        ids.append(sample_id)
        categories.append(row["category"])
    n = len(ids)
    return Samples(
        path=Path(path),
        ids=ids,
        categories=np.asarray(categories, dtype=object),
        scores={k: np.asarray(v) for k, v in scores.items() if len(v) == n and n},
        hygiene={k: np.asarray(v) for k, v in hygiene.items() if len(v) == n and n},
    )


# --------------------------------------------------------------------------------------
# Per-sample likelihoods (scores/test.jsonl)


@dataclass
class LikelihoodSamples:
    """``scores/test.jsonl`` of a run: per sample (sorted ids) and condition, the reference's
    NLL per target token (``nll / max(1, tokens)``, as ``dep_lightning/scoring.py``)."""

    path: Path
    ids: list[str]
    per_token: dict[str, np.ndarray]  # condition -> [n], aligned with ids


def read_scores(path: Path, likelihood: Mapping) -> LikelihoodSamples:
    """Reads and checks ``scores/test.jsonl`` against its run's ``likelihood`` block: every
    scored condition covers the same samples, each once, with the same token count, and as
    many samples as ``likelihood.overall.n``."""
    where = str(path)
    conditions = list(likelihood["conditions"])
    rows: dict[str, dict[str, tuple[float, int, int]]] = {c: {} for c in conditions}  # id -> (nll, tokens, line)
    for number, row in _json_rows(path, ("sample_id", "condition", "nll", "tokens")):
        sample_id, condition, nll, tokens = row["sample_id"], row["condition"], row["nll"], row["tokens"]
        if not isinstance(sample_id, str):
            raise InputError(where, number, "sample_id", sample_id, "wrong type", "expected a string")
        if condition not in rows:
            raise InputError(where, number, "condition", condition, "unknown condition",
                             f"metrics.json likelihood.conditions are {', '.join(conditions)}")
        if not _is_number(nll):
            raise InputError(where, number, "nll", nll, "wrong type", "expected a finite number")
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
            raise InputError(where, number, "tokens", tokens, "wrong type", "expected an integer >= 0")
        if sample_id in rows[condition]:
            raise InputError(where, number, "sample_id", sample_id, "duplicate sample",
                             f"condition {condition} first seen on line {rows[condition][sample_id][2]}")
        rows[condition][sample_id] = (float(nll), tokens, number)
    first = conditions[0]
    ids = sorted(rows[first])
    for condition in conditions[1:]:
        if sorted(rows[condition]) != ids:
            raise InputError(where, None, "condition", condition, "conditions cover different samples",
                             f"{len(rows[condition])} samples, {first} {len(ids)}")
        for sample_id in ids:
            nll, tokens, number = rows[condition][sample_id]
            if tokens != rows[first][sample_id][1]:
                raise InputError(where, number, "tokens", tokens, "token count differs between conditions",
                                 f"{rows[first][sample_id][1]} under {first} for sample {sample_id}")
    expected = likelihood["overall"]["n"]
    if len(ids) != expected:
        raise InputError(where, None, None, len(ids), "sample count differs from metrics.json",
                         f"likelihood.overall.n is {expected}")
    per_token = {c: np.asarray([rows[c][i][0] / max(1, rows[c][i][1]) for i in ids], dtype=np.float64)
                 for c in conditions}
    return LikelihoodSamples(Path(path), ids, per_token)


# --------------------------------------------------------------------------------------
# Runs and groups


@dataclass
class Run:
    source: str  # the run directory, or the W&B run path
    manifest: dict
    metrics: dict
    samples: Samples | None = None
    notes: list[str] = field(default_factory=list)
    likelihoods: LikelihoodSamples | None = None  # scores/test.jsonl, read when metrics.json has "likelihood"

    @property
    def likelihood(self) -> dict | None:
        """The ``likelihood`` block of ``metrics.json`` (``dep-lightning score``), or None."""
        return self.metrics.get("likelihood")

    @property
    def score_only(self) -> bool:
        """A run of ``dep-lightning score`` alone: likelihoods, no text metrics (not in the quality tables)."""
        return "overall" not in self.metrics

    @property
    def method(self) -> str:
        return self.manifest["method"]

    @property
    def ablation(self) -> dict:
        return self.manifest["ablation"]

    @property
    def seed(self) -> int | None:
        return self.manifest.get("seed")

    @property
    def group_key(self) -> str:
        return json.dumps(self._configuration(), sort_keys=True, default=str)

    def _configuration(self) -> dict[str, Any]:
        """The manifest without what tells runs of one configuration apart (``RUN_IDENTITY``)."""
        return {k: v for k, v in self.manifest.items() if k not in RUN_IDENTITY}

    @property
    def condition(self) -> str:
        """Whose history the test prompts showed (``data.condition`` of the manifest): ``true``
        for ordinary runs, another condition for a counterfactual-generation run."""
        return (self.manifest.get("data") or {}).get("condition", "true")

    @property
    def plain_key(self) -> str:
        """The configuration without its generation condition: a counterfactual-generation
        run shares it with the ordinary run of the same configuration."""
        configuration = self._configuration()
        configuration["data"] = {k: v for k, v in (configuration.get("data") or {}).items() if k != "condition"}
        return json.dumps(configuration, sort_keys=True, default=str)

    def score(self, category: str | None, metric: str) -> float | None:
        """A metric from ``metrics.json`` (``category=None``: overall); None when absent."""
        if metric in HYGIENE_METRICS:
            block = self.metrics.get("hygiene") or {}
        elif category is None:
            block = self.metrics["overall"]
        else:
            block = self.metrics["categories"].get(category) or {}
        value = block.get(metric)
        return float(value) if value is not None else None


def load_run(folder: Path, predictions: bool = True) -> Run:
    manifest = validate_manifest(read_json(folder / "manifest.json"), str(folder / "manifest.json"))
    metrics = validate_metrics(read_json(folder / "metrics.json"), str(folder / "metrics.json"))
    run = Run(str(folder), manifest, metrics)
    if predictions:
        path = folder / PREDICTIONS
        if path.is_dir():
            raise InputError(str(path), None, None, str(path), "is a directory", "expected a JSON-lines file")
        if path.is_file():
            run.samples = read_predictions(path)
            _same_count(path, len(run.samples.ids), metrics)
        elif not run.score_only:
            run.notes.append(f"{folder}: no {PREDICTIONS}; no intervals or tests for this run")
        if run.likelihood is not None:
            if (folder / SCORES).is_file():
                run.likelihoods = read_scores(folder / SCORES, run.likelihood)
            else:
                run.notes.append(f"{folder}: likelihood block without {SCORES}; the personalization table shows "
                                 f"the intervals recorded in metrics.json (one seed only)")
    return run


def _same_count(path: Path, rows: int, metrics: Mapping) -> None:
    """The predictions file holds the samples metrics.json counts: a cut or emptied file
    would change every interval without a word."""
    expected = metrics["overall"]["n"] if "overall" in metrics else rows
    if rows != expected:
        raise InputError(str(path), None, None, rows, "sample count differs from metrics.json",
                         f"overall.n is {expected}; truncated or from another run?")


def find_run_dirs(roots: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Run directories under the roots (recursively) and notes on incomplete ones."""
    found: list[Path] = []
    notes: list[str] = []
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"runs folder not found: {root}")
        if root.is_file():
            if root.name not in ("manifest.json", "metrics.json"):
                raise InputError(str(root), None, None, root.name, "not a run folder",
                                 "pass folders (searched recursively for manifest.json + metrics.json)")
            root = root.parent
        candidates = sorted({p.parent for name in ("manifest.json", "metrics.json") for p in root.rglob(name)})
        for folder in candidates:
            has_manifest, has_metrics = (folder / "manifest.json").exists(), (folder / "metrics.json").exists()
            if has_manifest and has_metrics:
                found.append(folder)
            elif has_manifest or has_metrics:
                missing = "metrics.json" if has_manifest else "manifest.json"
                notes.append(f"{folder}: not a complete run (no {missing}); skipped")
    # A run directory never holds another run: registry files below one (the copies a W&B
    # logger keeps in <run>/wandb/…/files/) belong to that run, not to a second one.
    unique = sorted(set(found))
    runs = set(unique)
    nested = [f for f in unique if any(parent in runs for parent in f.parents)]
    return [f for f in unique if f not in nested], notes


@dataclass
class RunGroup:
    """Runs of one configuration that differ only in seed."""

    runs: list[Run]

    @property
    def first(self) -> Run:
        return self.runs[0]

    @property
    def method(self) -> str:
        return self.first.method

    @property
    def ablation(self) -> dict:
        return self.first.ablation

    @property
    def manifest(self) -> dict:
        return self.first.manifest

    @property
    def condition(self) -> str:
        return self.first.condition

    @property
    def seeds(self) -> list[int | None]:
        return [run.seed for run in self.runs]

    @property
    def sources(self) -> list[str]:
        return [run.source for run in self.runs]

    def categories(self) -> set[str]:
        return {c for run in self.runs for c in run.metrics["categories"]}

    def summary(self, category: str | None, metric: str) -> tuple[float, float | None, int] | str:
        """(mean, sample std over seeds or None for one seed, seeds), or why there is no value."""
        values = [run.score(category, metric) for run in self.runs]
        present = [v for v in values if v is not None]
        if not present:
            if category is not None and metric not in HYGIENE_METRICS and category not in self.categories():
                return f"no category {category} in metrics.json of {', '.join(self.sources)}"
            return f"{metric} not in metrics.json of {', '.join(self.sources)}"
        if len(present) < len(values):
            missing = [run.source for run, v in zip(self.runs, values) if v is None]
            return f"{metric} missing in some seeds of the group: {', '.join(missing)}"
        return seed_statistics(present)

    def per_sample(self, category: str | None, metric: str) -> tuple[list[str], MetricSamples] | str:
        """Per-sample values of the group (sample ids, values), or why there are none.

        Seeds are combined per sample id, over the ids every seed has: mean-type values
        are averaged over seeds; BLEU statistics are summed (the BLEU of all seeds'
        outputs pooled, which equals the BLEU of seed-averaged statistics up to
        sacreBLEU's smoothing of unmatched orders).
        """
        if any(run.samples is None for run in self.runs):
            return f"no {PREDICTIONS} in " + ", ".join(run.source for run in self.runs if run.samples is None)
        per_run = []
        for run in self.runs:
            samples = run.samples
            values = samples.values(metric)
            if values is None:
                return f"no per-sample {metric} in {run.source}/{PREDICTIONS}"
            mask = np.ones(len(samples.ids), bool) if category is None else samples.categories == category
            per_run.append({sid: values[i] for i, sid in zip(np.flatnonzero(mask), np.asarray(samples.ids,
                                                                                                object)[mask])})
        common = sorted(set.intersection(*(set(d) for d in per_run)))
        if not common:
            where = f" of category {category}" if category else ""
            return f"no samples{where} shared by all seeds of the group"
        stacked = np.stack([np.stack([d[sid] for sid in common]) for d in per_run])
        combined = stacked.sum(axis=0) if metric == "bleu" else stacked.mean(axis=0)
        return common, MetricSamples(metric, combined)

    def per_sample_likelihood(self, conditions: Iterable[str]) -> tuple[list[str], dict[str, np.ndarray]] | str:
        """Per-sample NLL per token of each condition, averaged over the group's seeds per
        sample id (over the ids every seed scored), or why there are none."""
        conditions = list(conditions)
        unread = [run.source for run in self.runs if run.likelihoods is None]
        if unread:
            return f"no {SCORES} in " + ", ".join(unread)
        lacking = [f"{c} in {run.source}" for run in self.runs for c in conditions
                   if c not in run.likelihoods.per_token]
        if lacking:
            return "not scored: " + ", ".join(lacking)
        common = sorted(set.intersection(*(set(run.likelihoods.ids) for run in self.runs)))
        if not common:
            return "no samples shared by all seeds of the group"
        out = {}
        for condition in conditions:
            per_run = []
            for run in self.runs:
                position = {sid: i for i, sid in enumerate(run.likelihoods.ids)}
                per_run.append(run.likelihoods.per_token[condition][[position[sid] for sid in common]])
            out[condition] = np.mean(per_run, axis=0)
        return common, out


def group_runs(runs: Iterable[Run]) -> list[RunGroup]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.group_key, []).append(run)
    return [RunGroup(sorted(members, key=lambda r: (r.seed is None, r.seed or 0, r.source)))
            for members in groups.values()]


@dataclass
class Registry:
    runs: list[Run]
    notes: list[str] = field(default_factory=list)

    @cached_property
    def groups(self) -> list[RunGroup]:
        """Groups of the runs with text metrics (score-only runs are in the personalization table only)."""
        return group_runs(run for run in self.runs if not run.score_only)

    @property
    def ordinary_groups(self) -> list[RunGroup]:
        """The groups whose test prompts showed the user's own history (``condition`` true):
        the methods' results, as the paper's tables and figures show them."""
        return [group for group in self.groups if group.condition == "true"]

    @property
    def score_only(self) -> list[Run]:
        return [run for run in self.runs if run.score_only]

    def all_notes(self) -> list[str]:
        """Discovery notes, repeated seeds within a group, and per-run notes (missing predictions)."""
        repeated = [f"runs with the same seed counted separately: {', '.join(group.sources)}"
                    for group in self.groups if len(set(group.seeds)) < len(group.seeds)]
        return self.notes + repeated + [note for run in self.runs for note in run.notes]


def load_registry(roots: Iterable[str | Path], predictions: bool = True) -> Registry:
    folders, notes = find_run_dirs(roots)
    return Registry([load_run(folder, predictions) for folder in folders], notes)
