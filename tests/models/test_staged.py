"""Multi-stage prompting (PAG, DPL): the stage cache, the sample contexts, the final prompt."""

import json

import pytest

from dep_lightning.data.features import review_key
from dep_lightning.data.prompt import PromptBuilder, PromptConfig
from dep_lightning.models.base import GenerationConfig
from dep_lightning.models.dpl import DPLModule
from dep_lightning.models.pag import PAGModule
from dep_lightning.models.staged import StageCache
from tests.helpers import small_datamodule

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
    dm = small_datamodule(tmp_path_factory.mktemp("embeddings"), context=True, prompt=RAG, k=2)
    dm.setup("test")
    return dm


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
