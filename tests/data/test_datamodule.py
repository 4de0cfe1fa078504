"""The DataModule: leakage, slot/vector alignment, batching."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from dep_lightning.data.prompt import DIFF, HIS, PromptBuilder, PromptConfig
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
        assert a.sample_id == b.sample_id
        np.testing.assert_array_equal(a.slot_vec, b.slot_vec)
        assert a.input_ids == b.input_ids
    # The check can fail: test profiles show the val targets, so test vectors do change.
    test_before, test_after = before.build_examples("test"), after.build_examples("test")
    assert any(not np.array_equal(a.slot_vec, b.slot_vec) for a, b in zip(test_before, test_after))


def test_slot_vectors_belong_to_the_review_shown(cache_dir):
    dm = small_datamodule(cache_dir)
    dm.setup("fit")
    lookup = dm.cache.lookup
    batch = next(iter(dm.val_dataloader()))
    examples = dm.examples["val"]
    slots = batch.slots
    assert slots.positions.shape[0] == sum(len(e.slot_pos) for e in examples[:4]) > 0
    row = 0
    builder = PromptBuilder(dm.tokenizer, dm.prompt)
    for b, example in enumerate(examples[: batch.input_ids.shape[0]]):
        text = dm.tokenizer.decode(example.input_ids)
        sample = dm._samples("val")[b]
        history = dm._retrieve([sample])[0]
        # Encoded again, the prompt says which retrieved review each slot stands for.
        encoded = builder.encode(sample, history, dm.data.item)
        assert [(k, p) for _, k, p in encoded.slots] == list(zip(example.slot_kind, example.slot_pos))
        for index, kind, pos in encoded.slots:
            history_review = history[index]
            assert history_review.text in text
            assert tuple(slots.positions[row].tolist()) == (b, pos)
            assert batch.input_ids[b, pos].item() == dm.tokenizer.pad_token_id
            vector = slots.vectors[row].numpy()
            if kind == HIS:
                np.testing.assert_allclose(vector, lookup([history_review.text])[0], atol=1e-6)
                # The closest review text before the slot is this review's.
                before = dm.tokenizer.decode(example.input_ids[:pos])
                assert before.rsplit("[Review Text]: ", 1)[1].startswith(history_review.text[:40])
            else:
                assert kind == DIFF and slots.kinds[row].item() == DIFF
            row += 1


def test_prompt_only_batch_is_left_padded_with_shifted_slots(cache_dir):
    dm = small_datamodule(cache_dir)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    prompt = batch.prompt
    lengths = prompt.attention_mask.sum(1)
    width = prompt.input_ids.shape[1]
    for b in range(len(lengths)):
        assert prompt.attention_mask[b, width - lengths[b]:].all()  # left padding
    full_slots, prompt_slots = batch.slots.positions, prompt.slots.positions
    offsets = width - lengths
    np.testing.assert_array_equal(prompt_slots[:, 1], full_slots[:, 1] + offsets[full_slots[:, 0]])
    # Every slot lands on a real (attended) prompt position.
    assert prompt.attention_mask[prompt_slots[:, 0], prompt_slots[:, 1]].all()
    assert (prompt_slots[:, 1] < width).all()


@pytest.mark.parametrize("embeddings,kinds", [("his", {HIS}), ("diff", {DIFF}), ("none", set())])
def test_embedding_ablations_reach_the_batch(cache_dir, embeddings, kinds):
    dm = small_datamodule(cache_dir, prompt=PromptConfig(embeddings=embeddings))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch.slots.kinds.tolist()) == kinds
    labelled = batch.labels != -100
    assert labelled.any() and (batch.attention_mask[labelled] == 1).all()


def test_no_peer_diff_slots_are_zero_and_masked(cache_dir):
    dm = small_datamodule(cache_dir, limit_train=None)
    dm.setup("fit")
    for example in dm.examples["train"]:
        for vec, kind, peers in zip(example.slot_vec, example.slot_kind, example.slot_peers):
            if kind == DIFF and not peers:
                assert not vec.any()
            if kind == HIS:
                assert peers


@pytest.mark.parametrize("test_order", ["length", "file"])
def test_test_batches_group_prompts_of_similar_length(cache_dir, test_order):
    dm = small_datamodule(cache_dir, limit_test=None, limit_val=None, eval_batch_size=2, test_order=test_order)
    dm.setup("test")
    examples = dm.build_examples("test")
    lengths = [e.prompt_length for e in examples]
    assert len(set(lengths)) > 2, "the check needs prompts of different lengths"
    batches = [batch.prompt.attention_mask.sum(1).tolist() for batch in dm.test_dataloader()]
    seen = [n for batch in batches for n in batch]
    assert sorted(seen) == sorted(lengths)  # every sample once
    if test_order == "length":
        assert seen == sorted(lengths, reverse=True)
    else:
        assert seen == lengths
    # Validation keeps the file order either way (a capped validation generation sees the first samples).
    assert [n for batch in dm.val_dataloader() for n in batch.prompt.attention_mask.sum(1).tolist()] == [
        e.prompt_length for e in dm.build_examples("val")]


def test_val_order_length_batches_whole_sequences_longest_first(cache_dir):
    dm = small_datamodule(cache_dir, limit_val=None, eval_batch_size=2, val_order="length")
    dm.setup("validate")
    lengths = [len(e.input_ids) for e in dm.build_examples("val")]
    assert len(set(lengths)) > 2, "the check needs samples of different lengths"
    seen = [n for batch in dm.val_dataloader() for n in batch.attention_mask.sum(1).tolist()]
    assert seen == sorted(lengths, reverse=True)  # every sample once, longest first
    with pytest.raises(ValueError, match="val_order"):
        small_datamodule(cache_dir, val_order="random")


def test_lightning_moves_a_typed_batch_to_the_device_field_by_field(cache_dir):
    from dep_lightning.data.types import Batch
    from dep_lightning.models.base import PromptingModule

    dm = small_datamodule(cache_dir, context=True)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    assert isinstance(batch, Batch) and batch.prompt is not None and batch.context is not None
    # The hook Lightning calls before every step (the strategies' batch_to_device goes through
    # it); the meta device stands in for an accelerator: a tensor that did not move stays on the CPU.
    moved = PromptingModule(backbone="tiny").transfer_batch_to_device(batch, torch.device("meta"), 0)
    assert isinstance(moved, Batch) and moved is not batch
    for tensor in (moved.input_ids, moved.labels, moved.slots.positions, moved.slots.vectors,
                   moved.prompt.input_ids, moved.prompt.attention_mask, moved.prompt.slots.kinds):
        assert tensor.is_meta
    assert moved.slots.user_history is None  # an input this configuration does not build stays absent
    assert moved.sample_id == batch.sample_id and moved.prefix_length == batch.prefix_length
    assert all(a is b for a, b in zip(moved.context, batch.context))  # opaque, never copied
    assert batch.input_ids.device.type == "cpu"  # the collated batch itself is left as it was


def test_a_method_whose_inputs_the_data_does_not_build_is_refused_at_setup(cache_dir, tmp_path):
    import lightning as L

    from dep_lightning.data.errors import ConfigError
    from dep_lightning.models.base import PromptingModule
    from dep_lightning.models.pag import PAGModule
    from dep_lightning.models.pplug import PPlugModule

    dm = small_datamodule(cache_dir)  # DEP's his+diff prompt, no contexts
    assert dm.optional_inputs() == frozenset()
    pplug = PPlugModule(backbone="tiny", embedding_dim=dm.embedding_dim)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"'prompt.embeddings'.*pplug reads the batch input 'target_item'.*"
                                          r"data.init_args.prompt.embeddings: user"):
        trainer.test(pplug, datamodule=dm)
    assert not dm.examples  # refused before any example is built
    with pytest.raises(ConfigError, match=r"'context', value False .*pag reads the batch input 'context'"):
        dm.check_inputs(PAGModule(backbone="tiny", stage_cache_dir=str(tmp_path)))
    dm.check_inputs(PromptingModule(backbone="tiny"))  # rag / non_perso read no optional input
    with_user = small_datamodule(cache_dir, prompt=PromptConfig(embeddings="user", history=False, with_text=False))
    assert with_user.optional_inputs() == PPlugModule.inputs
    with_user.check_inputs(pplug)


def test_val_nll_does_not_depend_on_val_order(cache_dir):
    import lightning as L

    from dep_lightning.models.dep_module import DEPModule

    values = {}
    for order in ("file", "length"):
        dm = small_datamodule(cache_dir, limit_val=None, eval_batch_size=2, val_order=order)
        model = DEPModule(backbone="tiny", embedding_dim=32, latent_dim=16)
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
        values[order] = trainer.validate(model, datamodule=dm, verbose=False)[0]["val/nll"]
    # A token-weighted mean over the same tokens, batched differently: fp32 rounding only (a few
    # hundred terms of ~10 nats; relative 1e-5).
    assert values["length"] == pytest.approx(values["file"], rel=1e-5)
