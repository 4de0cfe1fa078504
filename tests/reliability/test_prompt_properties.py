"""Property-based tests of prompt assembly with the real SmolLM2 tokenizer.

For any reader-valid sample — arbitrary unicode (the private-use slot sentinel, control
and bidi characters, special-token strings such as ``<|im_end|>``), empty and huge
texts, 0-5 history reviews, any prompt configuration and token budget — encoding either
gives a well-formed example or a ``ValueError`` naming the sample when even the
history-free prompt cannot fit. Well-formed means: one slot per kept history review and
kind, at the slot token, newest review first; only the oldest reviews dropped; labels
exactly the target plus end-of-turn; the chat template's control tokens and no others
(data text can never end a turn); every shown text decodes back exactly.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dep_lightning.data.prompt import DIFF, HIS, PromptBuilder, PromptConfig
from dep_lightning.data.schema import Item, Review, Sample
from tests.reliability import strategies as S

# SmolLM2's byte-level vocabulary lacks six ASCII control bytes (0x04 0x06 0x13 0x14 0x16
# 0x1d: the tokenizer drops them) and the UTF-8 lead bytes 0xf1/0xf2 (code points
# U+40000-U+BFFFF, unassigned: they decode as U+FFFD). That is the model's tokenizer, not
# prompt assembly, so exact round trips are checked on every other character.
UNREPRESENTABLE = "\x04\x06\x13\x14\x16\x1d"
chars = st.characters(codec="utf-8", max_codepoint=0x3FFFF, exclude_characters=UNREPRESENTABLE)
# Huge texts are one branch in six: they cost a tokenization per dropped history.
text = st.one_of(st.text(chars, max_size=30), st.sampled_from(S.NASTY),
                 st.lists(st.sampled_from(S.NASTY), min_size=2, max_size=4).map("".join),
                 st.text(chars, max_size=300), st.text(chars, max_size=5),
                 st.builds(lambda piece, n: piece * n, st.sampled_from(["word ", "\u00e9", S.SENTINEL + "0",
                                                                         "<|im_end|>"]),
                           st.integers(200, 3000)))
rating = st.one_of(st.sampled_from([1.0, 3.0, 5.0]), st.floats(1.0, 5.0))
review = st.builds(Review, user_id=st.just("U1"), item_id=st.sampled_from(["I1", "I2", "I3", "\ue000", "<|im_end|>"]),
                   rating=rating, title=text, text=text, timestamp=st.integers(0, 2**40), category=st.just("Books"))
config = st.builds(PromptConfig, with_text=st.booleans(),
                   embeddings=st.sampled_from(["his", "diff", "his+diff", "none"]),
                   guidance=st.booleans(), max_length=st.sampled_from([200, 600, 2048]),
                   max_target_tokens=st.sampled_from([1, 8, 512]), history=st.booleans())


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(config=config, history=st.lists(review, max_size=5), target=review, item_title=text, item_text=text,
       meta=st.dictionaries(st.sampled_from(["I1", "I2", "I3"]), st.tuples(text, text)), with_target=st.booleans())
def test_prompt_assembly(tokenizer, config, history, target, item_title, item_text, meta, with_target):
    builder = PromptBuilder(tokenizer, config)
    sample = Sample("Books/test/7", "test", "Books", "U1", target, Item("T", item_title, item_text, "Books"),
                    tuple(history))

    def items(item_id, category=""):
        title, description = meta.get(item_id, (f"Item {item_id}", "No description available."))
        return Item(item_id, title, description, category)

    try:
        encoded = builder.encode(sample, history, items, with_target=with_target)
    except ValueError as error:
        assert "Books/test/7" in str(error) and "even without history" in str(error)
        with pytest.raises(ValueError):  # only when nothing fits: not even the history-free prompt
            builder.encode(sample, [], items, with_target=with_target)
        return

    ids, labels, n = encoded.input_ids, encoded.labels, encoded.prompt_length
    assert len(ids) == len(labels) <= config.max_length
    assert labels[:n] == [-100] * n and labels[n:] == ids[n:]

    # Oldest dropped first; one slot per kept review and kind, newest first, at the slot token.
    shown = list(range(len(history))) if config.history else []
    assert encoded.kept == shown[len(shown) - len(encoded.kept):]
    kinds = config.kinds if config.history else ()
    assert sorted(encoded.slots, key=lambda s: s[2]) == encoded.slots
    for kind in (HIS, DIFF):
        order = [index for index, k, _ in encoded.slots if k == kind]
        assert order == (encoded.kept[::-1] if kind in kinds else [])
    slot_positions = {position for _, _, position in encoded.slots}
    assert all(ids[p] == builder.slot_token_id for p in slot_positions)

    # Control tokens come from the chat template only: data text never ends or opens a turn.
    special_ids = set(tokenizer.added_tokens_decoder)
    prompt_specials = [tokenizer.convert_ids_to_tokens(t) for i, t in enumerate(ids[:n])
                       if t in special_ids and i not in slot_positions]
    assert sorted(prompt_specials) == sorted(["<|im_start|>"] * 3 + ["<|im_end|>"] * 2)
    target_ids = ids[n:]
    if with_target:
        assert 1 <= len(target_ids) <= config.max_target_tokens + 1
        assert not special_ids & set(target_ids[:-1])
        if target_ids[-1] == builder.end_of_turn_id:  # not cut: the target decodes back exactly
            assert tokenizer.decode(target_ids[:-1]) == builder.clean(target.text)
    else:
        assert target_ids == []

    # Everything shown decodes back exactly (minus the sentinel and with special strings defused).
    prompt_text = tokenizer.decode(ids[:n])
    assert builder.clean(item_title) in prompt_text and builder.clean(item_text) in prompt_text
    for index in encoded.kept:
        if config.with_text:
            assert builder.clean(history[index].text) in prompt_text
        assert builder.clean(history[index].title) in prompt_text
    assert S.SENTINEL not in prompt_text
