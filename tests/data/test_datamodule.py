"""The DataModule: leakage, slot/vector alignment, batching."""

from dataclasses import replace

import numpy as np
import pytest

from dep_lightning.data.prompt import DIFF, HIS, PromptConfig
from dep_lightning.data.schema import DPLRow, PreparedData
from tests.helpers import InMemorySource, small_data, small_datamodule


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("embeddings")


def with_eval_targets_rewritten(data: PreparedData) -> PreparedData:
    """Every val and test target text replaced, everywhere it occurs (also inside later profiles)."""
    changed = {}
    for c in data.categories:
        for split in ("val", "test"):
            for row in data.split(c, split):
                changed[(row.target.user_id, row.target.item_id)] = "REWRITTEN " + row.target.text[::-1]

    def fix(review):
        key = (review.user_id, review.item_id)
        return replace(review, text=changed[key]) if key in changed else review

    rows = {c: {s: [DPLRow(r.user_id, tuple(fix(p) for p in r.profile), fix(r.target), r.category)
                    for r in data.split(c, s)] for s in data.rows[c]} for c in data.categories}
    return PreparedData(rows=rows, items=data.items)


def test_changing_eval_targets_changes_no_training_vector(cache_dir):
    data = small_data()
    before = small_datamodule(cache_dir, InMemorySource(data), limit_train=None, limit_test=None)
    after = small_datamodule(cache_dir, InMemorySource(with_eval_targets_rewritten(data)), limit_train=None,
                             limit_test=None)
    train_before, train_after = before.build_examples("train"), after.build_examples("train")
    assert len(train_before) == len(train_after) > 20
    for a, b in zip(train_before, train_after):
        assert a["sample_id"] == b["sample_id"]
        np.testing.assert_array_equal(a["slot_vec"], b["slot_vec"])
        assert a["input_ids"] == b["input_ids"]
    # The check can fail: test profiles show the val targets, so test vectors do change.
    test_before, test_after = before.build_examples("test"), after.build_examples("test")
    assert any(not np.array_equal(a["slot_vec"], b["slot_vec"]) for a, b in zip(test_before, test_after))


def test_slot_vectors_belong_to_the_review_shown(cache_dir):
    dm = small_datamodule(cache_dir)
    dm.setup("fit")
    lookup = dm.cache.lookup
    batch = next(iter(dm.val_dataloader()))
    examples = dm.examples["val"]
    slots = batch["slots"]
    assert slots["positions"].shape[0] == sum(len(e["slot_pos"]) for e in examples[:4]) > 0
    row = 0
    for b, example in enumerate(examples[: batch["input_ids"].shape[0]]):
        text = dm.tokenizer.decode(example["input_ids"])
        for index, kind, pos in zip(example["slot_index"], example["slot_kind"], example["slot_pos"]):
            history_review = dm._retrieve([dm._samples("val")[b]])[0][index]
            assert history_review.text in text
            assert tuple(slots["positions"][row].tolist()) == (b, pos)
            assert batch["input_ids"][b, pos].item() == dm.tokenizer.pad_token_id
            vector = slots["vectors"][row].numpy()
            if kind == HIS:
                np.testing.assert_allclose(vector, lookup([history_review.text])[0], atol=1e-6)
                # The closest review text before the slot is this review's.
                before = dm.tokenizer.decode(example["input_ids"][:pos])
                assert before.rsplit("[Review Text]: ", 1)[1].startswith(history_review.text[:40])
            else:
                assert kind == DIFF and slots["kinds"][row].item() == DIFF
            row += 1


def test_prompt_only_batch_is_left_padded_with_shifted_slots(cache_dir):
    dm = small_datamodule(cache_dir)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    prompt = batch["prompt"]
    lengths = prompt["attention_mask"].sum(1)
    width = prompt["input_ids"].shape[1]
    for b in range(len(lengths)):
        assert prompt["attention_mask"][b, width - lengths[b]:].all()  # left padding
    full_slots, prompt_slots = batch["slots"]["positions"], prompt["slots"]["positions"]
    offsets = width - lengths
    np.testing.assert_array_equal(prompt_slots[:, 1], full_slots[:, 1] + offsets[full_slots[:, 0]])
    # Every slot lands on a real (attended) prompt position.
    assert prompt["attention_mask"][prompt_slots[:, 0], prompt_slots[:, 1]].all()
    assert (prompt_slots[:, 1] < width).all()


@pytest.mark.parametrize("embeddings,kinds", [("his", {HIS}), ("diff", {DIFF}), ("none", set())])
def test_embedding_ablations_reach_the_batch(cache_dir, embeddings, kinds):
    dm = small_datamodule(cache_dir, prompt=PromptConfig(embeddings=embeddings))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch["slots"]["kinds"].tolist()) == kinds
    labelled = batch["labels"] != -100
    assert labelled.any() and (batch["attention_mask"][labelled] == 1).all()


def test_no_peer_diff_slots_are_zero_and_masked(cache_dir):
    dm = small_datamodule(cache_dir, limit_train=None)
    dm.setup("fit")
    for example in dm.examples["train"]:
        for vec, kind, peers in zip(example["slot_vec"], example["slot_kind"], example["slot_peers"]):
            if kind == DIFF and not peers:
                assert not vec.any()
            if kind == HIS:
                assert peers


@pytest.mark.parametrize("test_order", ["length", "file"])
def test_test_batches_group_prompts_of_similar_length(cache_dir, test_order):
    dm = small_datamodule(cache_dir, limit_test=None, limit_val=None, eval_batch_size=2, test_order=test_order)
    dm.setup("test")
    examples = dm.build_examples("test")
    lengths = [e["prompt_length"] for e in examples]
    assert len(set(lengths)) > 2, "the check needs prompts of different lengths"
    batches = [batch["prompt"]["attention_mask"].sum(1).tolist() for batch in dm.test_dataloader()]
    seen = [n for batch in batches for n in batch]
    assert sorted(seen) == sorted(lengths)  # every sample once
    if test_order == "length":
        assert seen == sorted(lengths, reverse=True)
    else:
        assert seen == lengths
    # Validation keeps the file order either way (a capped validation generation sees the first samples).
    assert [n for batch in dm.val_dataloader() for n in batch["prompt"]["attention_mask"].sum(1).tolist()] == [
        e["prompt_length"] for e in dm.build_examples("val")]
