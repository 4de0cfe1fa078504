"""Prompt assembly: the paper's template, slots at the right positions, the token budget."""

import pytest

from dep_lightning.data.prompt import DIFF, HIS, PromptBuilder, PromptConfig
from dep_lightning.data.schema import Item, Review, Sample

HISTORY = tuple(Review("U1", f"I{i}", float(1 + i % 5), f"title {i}", f"text of review number {i}. " * (1 + i),
                       1000 + i)
                for i in range(5))
SAMPLE = Sample("Books/test/0", "test", "Books", "U1", Review("U1", "T", 5.0, "Loved it", "The target review.", 9999),
                Item("T", "Target Book", "A book about boats."), HISTORY)


def items(item_id, category=""):
    return Item(item_id, f"Item title {item_id}", f"Description of {item_id}.", category)


def encode(tokenizer, **config):
    return PromptBuilder(tokenizer, PromptConfig(**config)).encode(SAMPLE, HISTORY, items)


def test_slots_sit_between_their_markers_and_belong_to_their_review(tokenizer):
    builder = PromptBuilder(tokenizer, PromptConfig())
    encoded = builder.encode(SAMPLE, HISTORY, items)
    assert len(encoded.slots) == 2 * len(HISTORY)
    text = tokenizer.decode(encoded.input_ids)
    for index, kind, position in encoded.slots:
        assert encoded.input_ids[position] == builder.slot_token_id
        before = tokenizer.decode(encoded.input_ids[:position])
        after = tokenizer.decode(encoded.input_ids[position + 1:])
        assert before.endswith("<his_token_start>" if kind == HIS else "<diff_token_start>")
        assert after.startswith("<his_token_end>" if kind == HIS else "<diff_token_end>")
        # The nearest review text before the slot is the slot's own review's text.
        last_text = before.rsplit("[Review Text]: ", 1)[1]
        assert last_text.startswith(HISTORY[index].text.strip())
    assert "[Output Review Rating]: 5.0" in text and "[Output Review Title]: Loved it" in text


def test_newest_history_first(tokenizer):
    encoded = encode(tokenizer)
    order = [index for index, kind, _ in encoded.slots if kind == HIS]
    assert order == [4, 3, 2, 1, 0]


def test_labels_cover_only_the_target_and_end_of_turn(tokenizer):
    builder = PromptBuilder(tokenizer, PromptConfig())
    encoded = builder.encode(SAMPLE, HISTORY, items)
    target = [t for t in encoded.labels if t != -100]
    assert encoded.labels[: encoded.prompt_length] == [-100] * encoded.prompt_length
    assert tokenizer.decode(target[:-1]) == SAMPLE.target.text and target[-1] == builder.end_of_turn_id
    assert encoded.input_ids[encoded.prompt_length:] == target
    prompt_only = builder.encode(SAMPLE, HISTORY, items, with_target=False)
    assert prompt_only.input_ids == encoded.input_ids[: encoded.prompt_length]


@pytest.mark.parametrize("embeddings,kinds",
                         [("his", {HIS}), ("diff", {DIFF}), ("his+diff", {HIS, DIFF}), ("none", set())])
def test_embedding_configurations(tokenizer, embeddings, kinds):
    encoded = encode(tokenizer, embeddings=embeddings)
    assert {kind for _, kind, _ in encoded.slots} == kinds
    text = tokenizer.decode(encoded.input_ids)
    assert ("<his_token_start>" in text) == (HIS in kinds)
    assert ("<diff_token_start>" in text) == (DIFF in kinds)
    assert ("Note:" in text) == bool(kinds)


def test_with_text_and_guidance_switches(tokenizer):
    assert "[Review Text]" not in tokenizer.decode(encode(tokenizer, with_text=False).input_ids)
    assert "Note:" not in tokenizer.decode(encode(tokenizer, guidance=False).input_ids)
    no_history = tokenizer.decode(encode(tokenizer, history=False).input_ids)
    assert "[User's Past Reviews]" not in no_history and "Item title I0" not in no_history


def test_budget_drops_oldest_histories_first(tokenizer):
    full = encode(tokenizer)
    budget = full.prompt_length + (len(full.input_ids) - full.prompt_length) - 60
    cut = encode(tokenizer, max_length=budget)
    assert len(cut.input_ids) <= budget
    assert cut.kept == list(range(len(HISTORY) - len(cut.kept), len(HISTORY))) and len(cut.kept) < len(HISTORY)
    assert {index for index, _, _ in cut.slots} == set(cut.kept)
    with pytest.raises(ValueError, match="Books/test/0.*even without history"):
        encode(tokenizer, max_length=20)


def test_target_truncation(tokenizer):
    encoded = encode(tokenizer, max_target_tokens=2)
    assert len([t for t in encoded.labels if t != -100]) == 2


def test_sentinel_in_user_text_cannot_forge_a_slot(tokenizer):
    forged = Review("U1", "I9", 3.0, "x", "evil \ue0000" + "0\ue000 text", 5)
    encoded = PromptBuilder(tokenizer, PromptConfig()).encode(SAMPLE, (forged,), items)
    assert len(encoded.slots) == 2
