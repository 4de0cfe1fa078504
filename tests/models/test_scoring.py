"""Likelihood scoring: per-sample NLL, the counterfactual gain, and checks that can fail both ways.

* the trained no-user control without review text or metadata has a swap gain of exactly
  0 (its prompt holds nothing of the user): a leak of the swap anywhere else breaks it;
* a constructed method that copies the user's own words (the planted signal) shows a
  positive gain; one scored on the wrong history would not.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dep_lightning.callbacks.clock import RunClock
from dep_lightning.data.batching import IGNORE_INDEX
from dep_lightning.data.errors import InputError
from dep_lightning.data.prompt import PromptConfig
from dep_lightning.journal import read_jsonl_prefix
from dep_lightning.models.base import GenerativeModule
from dep_lightning.models.dep_module import DEPModule, NoUserControl
from dep_lightning.scoring import DEPTrainer, ScoreWriter, aligned, summarize
from tests.helpers import set_up, small_datamodule

SLOTS_ONLY = PromptConfig(with_text=False, metadata=False)


def trainer(tmp_path, **kwargs) -> DEPTrainer:
    settings = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                    default_root_dir=str(tmp_path))
    settings.update(kwargs)
    return DEPTrainer(**settings)


@pytest.fixture(scope="module")
def slots_only(tmp_path_factory):
    return set_up("fit", tmp_path_factory.mktemp("embeddings"), prompt=SLOTS_ONLY, score_limit=24)


def test_per_sample_nll_adds_up_to_the_training_loss(slots_only):
    model = DEPModule(backbone="tiny", embedding_dim=slots_only.embedding_dim, latent_dim=16)
    batch = next(iter(slots_only.score_loader("true")))
    nll, tokens = model.score_batch(batch)
    assert tokens.tolist() == (batch.labels[:, 1:] != IGNORE_INDEX).sum(1).tolist()
    with torch.no_grad():
        embeds, _ = model.input_embeddings(batch.input_ids, batch.slots)
        mean = model.lm_loss(embeds, batch.attention_mask, batch.labels)
    # Sum of a few hundred fp32 terms vs the same terms averaged by cross_entropy: rounding only.
    torch.testing.assert_close(nll.sum() / tokens.sum(), mean, rtol=1e-5, atol=0)


def test_a_sample_scores_the_same_alone_and_in_a_padded_batch(slots_only):
    model = DEPModule(backbone="tiny", embedding_dim=slots_only.embedding_dim, latent_dim=16)
    batch = next(iter(slots_only.score_loader("true")))
    together, _ = model.score_batch(batch)
    collate = slots_only.score_loader("true").collate_fn
    examples = {e.sample_id: e for e in slots_only.split_examples("score", "true")}
    for i, sample_id in enumerate(batch.sample_id):
        alone, _ = model.score_batch(collate([examples[sample_id]]))
        # Right padding never reaches a row's own positions; shapes differ, so BLAS may round
        # differently: a sum of ~100 fp32 token NLLs of ~10 nats each, relative 1e-5.
        torch.testing.assert_close(alone[0], together[i], rtol=1e-5, atol=0)


def test_no_user_control_without_text_has_exactly_zero_swap_gain(slots_only, tmp_path):
    model = NoUserControl(backbone="tiny", embedding_dim=slots_only.embedding_dim, latent_dim=16)
    summary = trainer(tmp_path).score(model, slots_only, conditions=["true", "swap", "none"])
    gain = summary["overall"]["gains"]["swap"]
    assert gain["n"] == len(slots_only.scored_samples()) == 24
    assert gain["gain"] == 0.0 and gain["gain_ci95"] == [0.0, 0.0] and gain["p_value"] == 1.0
    # The same check fails when the user's input can reach the model: DEP on the same data.
    dep = DEPModule(backbone="tiny", embedding_dim=slots_only.embedding_dim, latent_dim=16)
    dep_gain = trainer(tmp_path).score(dep, slots_only, conditions=["true", "swap"])["overall"]["gains"]["swap"]
    assert dep_gain["gain"] != 0.0
    # And removing the slots ("none") changes even the control's prompt.
    assert summary["overall"]["gains"]["none"]["gain"] != 0.0


class CopyUserWords(GenerativeModule):
    """A constructed method that copies the user's words: each reference token costs
    ``-log(0.5 * share of that token among the prompt's tokens + 0.5 / vocabulary)``. The
    prompt shows the history texts, so the user's own reviews (with their planted
    vocabulary and signatures) make the reference cheaper than another user's."""

    method = "copy_user_words"

    def score_batch(self, batch):
        vocab = len(self.tokenizer)
        nll, tokens = [], []
        for ids, labels in zip(batch.input_ids, batch.labels):
            prompt = ids[labels == IGNORE_INDEX]
            counts = torch.bincount(prompt, minlength=vocab).float() / max(1, prompt.numel())
            target = labels[labels != IGNORE_INDEX]
            nll.append(-torch.log(0.5 * counts[target] + 0.5 / vocab).sum())
            tokens.append(target.numel())
        return torch.stack(nll), torch.tensor(tokens)


def test_a_method_that_copies_the_users_words_shows_a_positive_gain(tmp_path):
    dm = small_datamodule(tmp_path / "embeddings", prompt=PromptConfig(with_text=True), score_limit=30)
    summary = trainer(tmp_path).score(CopyUserWords(backbone="tiny"), dm, conditions=["true", "swap"])
    gain = summary["overall"]["gains"]["swap"]
    assert gain["gain"] > 0 and gain["gain_ci95"][0] > 0 and gain["p_value"] < 0.05
    # Scoring a sample under its own history twice shows no gain: the instrument itself adds none.
    rows = [{"sample_id": str(i), "user_id": "u", "category": "c", "condition": c, "nll": float(v), "tokens": 10}
            for i, v in enumerate(np.linspace(1, 2, 12)) for c in ("true", "swap")]
    same = summarize(rows)["overall"]["gains"]["swap"]
    assert same["gain"] == 0.0 and same["p_value"] == 1.0


def test_score_writes_rows_metrics_and_manifest(slots_only, tmp_path):
    model = DEPModule(backbone="tiny", embedding_dim=slots_only.embedding_dim, latent_dim=16)
    writer = ScoreWriter(resamples=200)
    t = trainer(tmp_path, callbacks=[writer])
    t.score(model, slots_only, conditions=["true", "swap", "none", "his_only", "diff_only"])
    folder = Path(tmp_path)
    rows = [json.loads(line) for line in (folder / "scores" / "test.jsonl").read_text().splitlines()]
    assert len(rows) == 5 * 24 and set(rows[0]) == {"sample_id", "user_id", "category", "condition", "nll", "tokens"}
    ids, by = aligned(rows, ["true", "swap", "none", "his_only", "diff_only"])
    assert len(ids) == 24 and all(r["nll"] > 0 for r in rows)
    metrics = json.loads((folder / "metrics.json").read_text())
    block = metrics["likelihood"]["overall"]
    assert block["n"] == 24 and set(block["gains"]) == {"swap", "none", "his_only", "diff_only"}
    true = np.array([r["nll"] / r["tokens"] for r in by["true"]])
    assert block["nll_true"] == pytest.approx(true.mean(), rel=1e-12)  # float64 mean of the same values
    assert set(metrics["diagnostics"]) == {"latent_mean", "latent_spread", "prompt_norm_ratio", "prompt_spread",
                                           "prompt_user_spread"}
    assert json.loads((folder / "manifest.json").read_text())["method"] == "dep"
    assert model.scoring_conditions is None and slots_only.scoring_conditions is None  # back to generation


def test_mismatched_conditions_are_an_error():
    rows = [{"sample_id": "a", "category": "c", "condition": "true", "nll": 1.0, "tokens": 2},
            {"sample_id": "b", "category": "c", "condition": "true", "nll": 1.0, "tokens": 2},
            {"sample_id": "a", "category": "c", "condition": "swap", "nll": 1.0, "tokens": 2}]
    with pytest.raises(ValueError, match="cover the same samples"):
        aligned(rows, ["true", "swap"])
    with pytest.raises(ValueError, match="scored twice"):
        aligned(rows + rows[:1], ["true", "swap"])


def test_copy_baselines_have_no_likelihood(slots_only, tmp_path):
    from dep_lightning.models.copy import CopyBaseline

    with pytest.raises(ValueError, match="no likelihood"):
        trainer(tmp_path).score(CopyBaseline(), slots_only)


def test_scoring_reads_the_shared_prefix_from_the_cache_without_changing_the_nll(slots_only):
    model = DEPModule(backbone="tiny", embedding_dim=slots_only.embedding_dim, latent_dim=16)
    batch = next(iter(slots_only.score_loader("true")))
    assert batch.prefix_length > 0, "the scored samples should share a prefix"
    with_prefix, tokens = model.score_batch(batch)
    assert "_prefix_kv" in model.__dict__  # the cache was used
    batch.prefix_length = 0
    whole, whole_tokens = model.score_batch(batch)
    assert torch.equal(tokens, whole_tokens)
    # The prompt runs in two pieces instead of one: other matmul shapes, so rounding only
    # (a sum of ~100 fp32 token NLLs of ~10 nats each, relative 1e-5, as above).
    torch.testing.assert_close(with_prefix, whole, rtol=1e-5, atol=0)


class CountedDEP(DEPModule):
    """DEP that counts the batches it actually runs."""

    runs = 0

    def lm_nll(self, *args, **kwargs):  # once per scored batch (score_batch), not overriding it
        type(self).runs += 1
        return super().lm_nll(*args, **kwargs)


class CountedControl(NoUserControl):
    """The no-user control, counting the batches it actually runs."""

    runs = 0

    def lm_nll(self, *args, **kwargs):  # once per scored batch (score_batch), not overriding it
        type(self).runs += 1
        return super().lm_nll(*args, **kwargs)


def score_rows(folder: Path) -> dict[tuple[str, str], dict]:
    return {(r["sample_id"], r["condition"]): r for r in map(json.loads, (folder / "scores" / "test.jsonl").open())}


def test_batches_the_backbone_alone_scores_are_shared_among_runs(tmp_path):
    """Under ``none`` a trained method's prompts hold no soft prompt, so the frozen backbone alone
    scores them: with a shared folder a second run (another method, other weights) takes those
    batches from the first and writes the rows it would have computed; batches with slots are
    never shared, nor are those of a method that scores by its own rule."""
    dm = small_datamodule(tmp_path / "embeddings", prompt=SLOTS_ONLY, score_limit=24)
    dm.setup("fit")
    batches = len(dm.score_loader("true"))
    shared = tmp_path / "shared"

    CountedDEP.runs = CountedControl.runs = 0
    torch.manual_seed(0)
    dep = CountedDEP(backbone="tiny", embedding_dim=dm.embedding_dim, latent_dim=16)
    trainer(tmp_path / "dep", callbacks=[ScoreWriter(resamples=50, shared=str(shared))]).score(
        dep, dm, conditions=["true", "none"])
    assert CountedDEP.runs == 2 * batches
    assert len(list(shared.glob("partial-backbone-*.jsonl"))) == 1

    torch.manual_seed(1)
    control = CountedControl(backbone="tiny", embedding_dim=dm.embedding_dim, latent_dim=16)
    trainer(tmp_path / "control", callbacks=[ScoreWriter(resamples=50, shared=str(shared)), RunClock()]).score(
        control, dm, conditions=["true", "none"])
    assert CountedControl.runs == batches  # its own "true" only
    (line,) = [json.loads(t) for t in (tmp_path / "control" / "timing.jsonl").read_text().splitlines()]
    assert (line["batches_computed"], line["batches_shared"]) == (batches, batches)
    # What it would have computed itself (no shared folder), bit for bit.
    trainer(tmp_path / "alone", callbacks=[ScoreWriter(resamples=50)]).score(control, dm, conditions=["true", "none"])
    assert CountedControl.runs == 3 * batches
    assert score_rows(tmp_path / "control") == score_rows(tmp_path / "alone")
    # The slots' batches were not shared: the two methods' "true" rows differ.
    dep_rows, control_rows = score_rows(tmp_path / "dep"), score_rows(tmp_path / "control")
    assert all(dep_rows[k]["nll"] != control_rows[k]["nll"] for k in dep_rows if k[1] == "true")
    assert all(dep_rows[k] == control_rows[k] for k in dep_rows if k[1] == "none")

    # A method with its own scoring rule (no trainable weight, but not the backbone's NLL) shares nothing.
    none = next(iter(dm.score_loader("none")))
    copier = CopyUserWords(backbone="tiny")
    assert not copier.backbone_only(none)
    # Nor does a DEP subclass that scores another way or builds other embeddings: without slots
    # its batches are DEP's only while DEP's own rule computes them.
    assert dep.backbone_only(none) and control.backbone_only(none)

    class OwnRule(DEPModule):
        def score_batch(self, batch):
            nll, tokens = super().score_batch(batch)
            return nll * 2, tokens

    class OwnEmbeddings(NoUserControl):
        def input_embeddings(self, input_ids, slots):
            embeds, losses = super().input_embeddings(input_ids, slots)
            return embeds * 2, losses

    for cls in (OwnRule, OwnEmbeddings):
        assert not cls(backbone="tiny", embedding_dim=dm.embedding_dim, latent_dim=16).backbone_only(none)


def test_a_condition_with_identical_inputs_is_scored_once(tmp_path):
    """The no-user control without text sees nothing of the user under ``swap``: its batches
    are bit-identical to ``true``'s and are not run again, with the same rows as a run that
    scores every condition; ``none`` (no slots) and DEP's ``swap`` do run."""
    dm = small_datamodule(tmp_path / "embeddings", prompt=SLOTS_ONLY, score_limit=24)
    dm.setup("fit")
    batches = len(dm.score_loader("true"))

    CountedControl.runs = 0
    torch.manual_seed(0)
    control = CountedControl(backbone="tiny", embedding_dim=dm.embedding_dim, latent_dim=16)
    once = tmp_path / "once"
    trainer(once, callbacks=[ScoreWriter(resamples=50)]).score(control, dm, conditions=["true", "swap", "none"])
    assert CountedControl.runs == 2 * batches  # true and none; swap reused true's
    # Every condition run in full (no reuse: scoring each on its own) gives the same rows.
    rows = {}
    for condition in ("true", "swap", "none"):
        out = tmp_path / condition
        trainer(out, callbacks=[ScoreWriter(resamples=50)]).score(control, dm, conditions=[condition])
        rows.update({(r["sample_id"], condition): r for r in map(json.loads, (out / "scores" / "test.jsonl").open())})
    assert CountedControl.runs == 5 * batches
    reused = {(r["sample_id"], r["condition"]): r for r in map(json.loads, (once / "scores" / "test.jsonl").open())}
    assert reused == rows

    CountedDEP.runs = 0
    torch.manual_seed(0)
    dep = CountedDEP(backbone="tiny", embedding_dim=dm.embedding_dim, latent_dim=16)
    trainer(tmp_path / "dep", callbacks=[ScoreWriter(resamples=50)]).score(dep, dm, conditions=["true", "swap"])
    assert CountedDEP.runs == 2 * batches  # the user's slots differ: nothing reused


class Killed(Exception):
    """Stands for the kill of a scoring run part-way."""


def test_a_scoring_run_killed_part_way_computes_only_what_it_lacks_when_rerun(tmp_path):
    """The batches a killed run computed are kept in ``scores/partial-*.jsonl``: the rerun on
    the same weights runs only the others and writes the rows of an uninterrupted run, bit
    for bit; other weights reuse nothing; the partial files go once the rows are written."""
    dm = small_datamodule(tmp_path / "embeddings", prompt=SLOTS_ONLY, score_limit=24)
    dm.setup("fit")
    batches = 2 * len(dm.score_loader("true"))  # true and swap
    assert batches >= 4

    class KilledAfter(DEPModule):
        runs, limit = 0, None

        def score_batch(self, batch):
            if self.limit is not None and type(self).runs == self.limit:
                raise Killed
            type(self).runs += 1
            return super().score_batch(batch)

    torch.manual_seed(0)
    model = KilledAfter(backbone="tiny", embedding_dim=dm.embedding_dim, latent_dim=16)
    whole = tmp_path / "whole"
    trainer(whole, callbacks=[ScoreWriter(resamples=50)]).score(model, dm, conditions=["true", "swap"])
    assert KilledAfter.runs == batches

    run = tmp_path / "run"
    KilledAfter.runs, model.limit = 0, batches // 2 + 1
    with pytest.raises(Killed):
        trainer(run, callbacks=[ScoreWriter(resamples=50)]).score(model, dm, conditions=["true", "swap"])
    (partial,) = (run / "scores").glob("partial-*-rank0.jsonl")
    assert len(partial.read_text().splitlines()) == batches // 2 + 1
    with partial.open("a") as handle:
        handle.write('{"inputs": "cut short by the ki')  # the line being written at the kill

    # Killed again after one more batch: its line starts after the last complete one (the cut
    # end is dropped first), so the file stays whole.
    KilledAfter.runs, model.limit = 0, 1
    with pytest.raises(Killed):
        trainer(run, callbacks=[ScoreWriter(resamples=50)]).score(model, dm, conditions=["true", "swap"])
    assert len(read_jsonl_prefix(partial)) == len(partial.read_text().splitlines()) == batches // 2 + 2

    KilledAfter.runs, model.limit = 0, None
    trainer(run, callbacks=[ScoreWriter(resamples=50), RunClock()]).score(model, dm, conditions=["true", "swap"])
    assert KilledAfter.runs == batches - (batches // 2 + 2)
    # The timing line tells the batches run from those restored (its seconds are the first's).
    (line,) = [json.loads(t) for t in (run / "timing.jsonl").read_text().splitlines()]
    assert (line["batches_computed"], line["batches_restored"]) == (batches - (batches // 2 + 2), batches // 2 + 2)
    assert (run / "scores" / "test.jsonl").read_bytes() == (whole / "scores" / "test.jsonl").read_bytes()
    assert not list((run / "scores").glob("partial-*"))

    # A line that is not JSON before the end is not a cut: an error naming file and line.
    KilledAfter.runs, model.limit = 0, 1
    with pytest.raises(Killed):
        trainer(run, callbacks=[ScoreWriter(resamples=50)]).score(model, dm, conditions=["true", "swap"])
    (partial,) = (run / "scores").glob("partial-*-rank0.jsonl")
    partial.write_text("not json\n" + partial.read_text())
    model.limit = None
    with pytest.raises(InputError, match=rf"{partial.name}:1: malformed JSON, value 'not json'"):
        trainer(run, callbacks=[ScoreWriter(resamples=50)]).score(model, dm, conditions=["true", "swap"])
    partial.unlink()

    # Other weights: nothing reused from the first weights' partial file.
    KilledAfter.runs, model.limit = 0, 1
    with pytest.raises(Killed):
        trainer(run, callbacks=[ScoreWriter(resamples=50)]).score(model, dm, conditions=["true", "swap"])
    with torch.no_grad():
        next(p for p in model.parameters() if p.requires_grad).add_(0.01)
    KilledAfter.runs, model.limit = 0, None
    trainer(run, callbacks=[ScoreWriter(resamples=50)]).score(model, dm, conditions=["true", "swap"])
    assert KilledAfter.runs == batches
