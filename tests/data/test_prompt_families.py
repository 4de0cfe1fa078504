"""Prompt families by name and slot kinds as an enum: one registry the parser, the prompt
builder and the ablation axis agree on."""

from __future__ import annotations

from typing import get_args

import pytest

from dep_lightning.axes import BY_KEY
from dep_lightning.data.prompt import _SENTINEL, _SLOT, PROMPT_FAMILIES, Embeddings, PromptConfig, SlotKind


def test_the_config_literal_lists_exactly_the_registered_families():
    assert set(get_args(Embeddings)) == set(PROMPT_FAMILIES)
    assert all(name == family.name for name, family in PROMPT_FAMILIES.items())


def test_the_embeddings_axis_values_are_families():
    assert set(BY_KEY["embeddings"].values) <= set(PROMPT_FAMILIES)


@pytest.mark.parametrize("name", sorted(PROMPT_FAMILIES))
def test_a_config_reads_its_layout_from_the_family(name):
    config, family = PromptConfig(embeddings=name), PROMPT_FAMILIES[name]
    assert config.family is family and config.kinds == family.kinds and config.user_slot == family.user_slot
    assert all(isinstance(kind, SlotKind) for kind in config.kinds)
    # A family has per-review slots or the user slot, never both.
    assert not (family.kinds and family.user_slot)


def test_an_unknown_family_names_the_known_ones():
    with pytest.raises(ValueError, match="embeddings must be one of his\\+diff, his, diff, none, user, got 'pca'"):
        PromptConfig(embeddings="pca")


def test_every_slot_kind_is_found_in_rendered_text_and_nothing_else_is():
    for kind in SlotKind:
        match = _SLOT.fullmatch(f"{_SENTINEL}{kind}7{_SENTINEL}")
        assert match and SlotKind(int(match.group(1))) is kind and match.group(2) == "7"
    assert _SLOT.fullmatch(f"{_SENTINEL}{len(SlotKind)}0{_SENTINEL}") is None
    assert [int(k) for k in SlotKind] == list(range(len(SlotKind)))  # kinds index tables: dense from 0
