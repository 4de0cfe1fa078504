"""Multi-stage prompting (PAG, DPL): the stage cache, the sample contexts, the final prompt."""

import json
import math

import pytest

from dep_lightning.data.features import review_key
from dep_lightning.data.prompt import PromptBuilder, PromptConfig
from dep_lightning.models.dpl import DPLModule
from dep_lightning.models.generation import GenerationConfig
from dep_lightning.models.pag import PAGModule
from dep_lightning.models.staged import StageCache
from tests.helpers import set_up

RAG = PromptConfig(history=True, with_text=True, embeddings="none", guidance=False)
GREEDY = GenerationConfig(max_new_tokens=4, do_sample=False)


def test_stage_cache_keys_files_and_atomic_writes(tmp_path, caplog):
    cache = StageCache(tmp_path)
    key = cache.key("prompt", "tiny@abc", {"max_new_tokens": 4})
    assert len({key, cache.key("prompt!", "tiny@abc", {"max_new_tokens": 4}),
                cache.key("prompt", "tiny@abd", {"max_new_tokens": 4}),
                cache.key("prompt", "tiny@abc", {"max_new_tokens": 5})}) == 4
    assert cache.get(key) is None
    cache.put(key, {"output": "a profile", "prompt": "prompt"})
    assert cache.path(key) == tmp_path / key[:2] / f"{key}.json"
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [f"{key}.json"]  # no temporary file left
    assert cache.get(key)["output"] == "a profile"
    cache.path(key).write_text('{"key": "' + key + '", "outp')  # a damaged entry reads as absent
    assert cache.get(key) is None and "unreadable" in caplog.text


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    return set_up("test", tmp_path_factory.mktemp("embeddings"), context=True, prompt=RAG, k=2)


@pytest.fixture(scope="module")
def batch(datamodule):
    return next(iter(datamodule.test_dataloader()))


def examples_of(datamodule, batch) -> list[dict]:
    """The DataModule's test examples in the batch's order (test batches are grouped by
    prompt length, so they need not follow the split's order)."""
    by_id = {example.sample_id: example for example in datamodule.examples["test"]}
    return [by_id[context.sample.sample_id] for context in batch.context]


def test_contexts_rebuild_the_datamodule_prompt_exactly(datamodule, batch):
    for example, context in zip(examples_of(datamodule, batch), batch.context, strict=True):
        encoded = PromptBuilder(datamodule.tokenizer, context.prompt).encode(context.sample, context.retrieved,
                                                                             context.item)
        assert encoded.input_ids == example.input_ids
        assert [r.text for r in context.retrieved] == example.retrieved


def test_peers_are_other_users_corpus_reviews_of_the_same_item(datamodule, batch):
    corpus = {review_key(r) for r in datamodule.peer_corpus()}
    data = datamodule.load_data()
    held_out = {review_key(row.target) for c in data.categories for s in ("val", "test") for row in data.split(c, s)}
    seen = 0
    for context in batch.context:
        for review, peers in zip(context.retrieved, context.peers):
            assert len(peers.reviews) == len(peers.vectors)
            for peer in peers.reviews:
                assert peer.item_id == review.item_id and peer.user_id != review.user_id
                assert review_key(peer) in corpus and review_key(peer) not in held_out
            seen += len(peers.reviews)
            if peers.reviews:
                assert (peers.vectors == datamodule.cache.lookup([p.text for p in peers.reviews])).all()
    assert seen > 0


def test_stage_texts_are_generated_once_and_resume_after_a_loss(datamodule, batch, tmp_path):
    pag = PAGModule(backbone="tiny", stage_cache_dir=str(tmp_path), stage_generation=GREEDY, stage_batch_size=3)
    first = pag.profiles(batch.context)
    n = len(batch.context)
    assert len(first) == n and pag.stage_counts["profile"] == {"generated": n}
    files = sorted(tmp_path.rglob("*.json"))
    assert len(files) == n
    record = json.loads(files[0].read_text())
    assert record["stage"] == "profile" and record["backbone"] == pag.backbone_fingerprint
    assert record["generation"]["max_new_tokens"] == 4 and "<|im_start|>system" in record["prompt"]

    assert pag.profiles(batch.context) == first  # everything from the cache
    assert pag.stage_counts["profile"] == {"generated": n, "cached": n}
    files[0].unlink()  # as if the run had stopped before writing it
    again = PAGModule(backbone="tiny", stage_cache_dir=str(tmp_path), stage_generation=GREEDY)
    assert again.profiles(batch.context) == first
    assert again.stage_counts["profile"] == {"generated": 1, "cached": n - 1}

    longer = PAGModule(backbone="tiny", stage_cache_dir=str(tmp_path),
                       stage_generation=GenerationConfig(max_new_tokens=5, do_sample=False))
    longer.profiles(batch.context[:1])
    assert longer.stage_counts["profile"] == {"generated": 1}  # other decoding settings, other key


def test_the_final_prompt_is_the_rag_prompt_plus_the_profile(datamodule, batch, tmp_path):
    pag = PAGModule(backbone="tiny", stage_cache_dir=str(tmp_path), stage_generation=GREEDY)
    profiles = [f"profile number {i}" for i in range(len(batch.context))]
    prompt, shown = pag.final_prompts(batch.context, profiles)
    tokenizer = datamodule.tokenizer
    for b, (context, example) in enumerate(zip(batch.context, examples_of(datamodule, batch), strict=True)):
        text = tokenizer.decode(prompt.input_ids[b][prompt.attention_mask[b].bool()])
        rag = tokenizer.decode(example.input_ids[:example.prompt_length])
        assert f"[User Profile]: profile number {b}\n[Output Review Rating]" in text
        assert text.replace(f"\n[User Profile]: profile number {b}", "").replace(
            "\n\n[User Profile] is a summary of the user written from their past reviews; it should serve as a "
            "hint for personalized review text generation.", "") == rag
        assert shown[b] == example.history


def test_dpl_compares_each_review_with_representative_peers(datamodule, batch, tmp_path):
    dpl = DPLModule(backbone="tiny", stage_cache_dir=str(tmp_path), stage_generation=GREEDY, representatives=2)
    with_peers = 0
    for context in batch.context:
        for i, peers in enumerate(context.peers):
            chosen = dpl.representative_peers(context, i)
            assert len(chosen) == min(2, len(peers.reviews)) and len(set(chosen)) == len(chosen)
            assert all(c in peers.reviews for c in chosen)
            with_peers += bool(chosen)
    summaries = dpl.profiles(batch.context)
    assert len(summaries) == len(batch.context)
    assert dpl.stage_counts["analysis"]["generated"] == with_peers > 0
    assert dpl.stage_counts["summary"]["generated"] == len(batch.context)
    prompts = [json.loads(p.read_text())["prompt"] for p in tmp_path.rglob("*.json")]
    analyses = [p for p in prompts if "[Other Users' Reviews]" in p]
    assert len(analyses) == with_peers
    assert all("Writing style" in p and "Emotional tone" in p and "Semantics" in p for p in analyses)


# -- likelihood scoring -------------------------------------------------------------------

@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    return set_up("fit", tmp_path_factory.mktemp("embeddings"), context=True, prompt=RAG, k=2, score_limit=12)


def test_pag_scores_the_reference_after_its_final_prompt(scored, tmp_path):
    """The NLL of each reference, recomputed by hand from the final prompt and the
    backbone's logits: the profile is in the prompt, the reference alone is scored."""
    import torch

    pag = PAGModule(backbone="tiny", stage_cache_dir=str(tmp_path), stage_generation=GREEDY)
    batch = next(iter(scored.score_loader("true")))
    nll, tokens = pag.score_batch(batch)
    profiles = pag.profiles(batch.context)
    prompt, _ = pag.final_prompts(batch.context, profiles)
    examples = {e.sample_id: e for e in scored.split_examples("score", "true")}
    for b, context in enumerate(batch.context):
        shown = prompt.input_ids[b][prompt.attention_mask[b].bool()].tolist()
        example = examples[context.sample.sample_id]
        target = example.input_ids[example.prompt_length:]  # the reference, as the DataModule encodes it
        assert int(tokens[b]) == len(target)
        ids = torch.tensor([shown + target])
        with torch.no_grad():
            logits = pag.backbone(input_ids=ids).logits[0, len(shown) - 1:-1].float()
        expected = torch.nn.functional.cross_entropy(logits, torch.tensor(target), reduction="sum")
        # The same fp32 terms summed in another order and batch shape: rounding only.
        torch.testing.assert_close(nll[b], expected, rtol=1e-5, atol=0)
        assert f"[User Profile]: {profiles[b].strip()}" in scored.tokenizer.decode(shown)


def test_pag_swap_moves_the_profile_with_the_reviews(scored, tmp_path):
    """Under ``swap`` a sample is scored with its donor's reviews and the profile written from
    them: no new profile is written for a donor that is itself scored (the stage cache serves
    the donor's own), and ``none`` writes the profile of no reviews once."""
    from dep_lightning.scoring import DEPTrainer

    pag = PAGModule(backbone="tiny", stage_cache_dir=str(tmp_path / "stages"), stage_generation=GREEDY)
    trainer = DEPTrainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path))
    summary = trainer.score(pag, scored, conditions=["true", "swap", "none"])
    n = len(scored.scored_samples())
    assert summary["overall"]["n"] == n == 12
    true_prompts, swap_prompts = _keys(pag, scored, "true"), _keys(pag, scored, "swap")
    assert swap_prompts <= true_prompts  # every donor is scored too: its profile is reused
    none_prompts = _keys(pag, scored, "none")
    assert len(none_prompts) == 1  # one prompt without reviews, for everyone
    stored = {p.stem for p in (tmp_path / "stages").rglob("*.json")}
    assert stored == true_prompts | none_prompts
    report = json.loads((tmp_path / "analysis" / "stages_score.json").read_text())
    assert report["stages"]["profile"]["generated"] == len(stored)
    gains = summary["overall"]["gains"]
    assert gains["swap"]["gain"] != 0.0 and gains["none"]["gain"] != 0.0  # the profile and reviews reach the NLL


def _keys(pag, datamodule, condition):
    """The stage cache keys of the profile prompts of the scored samples under ``condition``."""
    from dep_lightning.models.pag import profile_messages

    return {pag.stage_key(pag.stage_prompt(profile_messages(e.context, pag.max_review_chars)))
            for e in datamodule.split_examples("score", condition)}


def test_dpl_scores_every_condition(scored, tmp_path):
    from dep_lightning.scoring import DEPTrainer

    dpl = DPLModule(backbone="tiny", stage_cache_dir=str(tmp_path / "stages"), stage_generation=GREEDY,
                    representatives=2)
    trainer = DEPTrainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path))
    summary = trainer.score(dpl, scored, conditions=["true", "swap"])
    assert summary["overall"]["n"] == 12 and math.isfinite(summary["overall"]["nll_swap"])
    report = json.loads((tmp_path / "analysis" / "stages_score.json").read_text())
    assert report["stages"]["summary"]["generated"] == len(_distinct_summaries(tmp_path / "stages"))


def _distinct_summaries(root):
    return [p for p in root.rglob("*.json") if json.loads(p.read_text())["stage"] == "summary"]


def test_pag_scoring_killed_part_way_runs_only_the_batches_it_lacks(scored, tmp_path):
    """PAG's prompts are built inside ``score_batch`` (the profile first): the batches a killed
    run scored are looked up by their final inputs, and the rerun writes the same rows."""
    from dep_lightning.scoring import DEPTrainer, ScoreWriter

    class Killed(Exception):
        pass

    class Counted(PAGModule):
        runs, limit = 0, None

        def lm_nll(self, *args, **kwargs):
            if self.limit is not None and type(self).runs == self.limit:
                raise Killed
            type(self).runs += 1
            return super().lm_nll(*args, **kwargs)

    def score(model, folder):
        trainer = DEPTrainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                             default_root_dir=str(folder), callbacks=[ScoreWriter(resamples=20)])
        return trainer.score(model, scored, conditions=["true", "swap"])

    pag = Counted(backbone="tiny", stage_cache_dir=str(tmp_path / "stages"), stage_generation=GREEDY)
    score(pag, tmp_path / "whole")
    batches, Counted.runs = Counted.runs, 0
    assert batches >= 2
    pag.limit = 1
    with pytest.raises(Killed):
        score(pag, tmp_path / "run")
    Counted.runs, pag.limit = 0, None
    score(pag, tmp_path / "run")
    assert Counted.runs == batches - 1
    assert (tmp_path / "run" / "scores" / "test.jsonl").read_bytes() == \
        (tmp_path / "whole" / "scores" / "test.jsonl").read_bytes()
