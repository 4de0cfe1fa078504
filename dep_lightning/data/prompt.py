"""Prompt assembly following the paper's template (figure 6), with soft-prompt slots.

A slot is one position in the token sequence whose input embedding the model replaces
with a projected review vector. The frozen model's vocabulary is never touched: the
slot holds an ordinary token id (the pad token) and the start/end markers are plain
text. Slots are found by rendering the chat template with a sentinel character at each
slot, splitting on it, tokenizing the pieces and recording where the slots fall.

Every text taken from the data is cleaned first: the sentinel is removed (so no review
can forge a slot) and the tokenizer's added/special tokens written out as text (e.g.
``<|im_end|>``) get a zero-width space after their first character, so review text can
never become a control token that ends a turn or opens a new one.

History blocks are shown newest first. When prompt + target exceed ``max_length``
tokens, the oldest histories are dropped first.

Two additions serve the baselines: ``embeddings: user`` puts one instruction slot and one
user slot (PPlug) at the top of the user message instead of per-review slots, and
``encode(..., profile=...)`` adds a ``[User Profile]`` section (PAG, DPL).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal, Sequence

from dep_lightning.data.schema import Review, Sample


class SlotKind(IntEnum):
    """What a soft-prompt slot holds. Integers, because kinds travel in index tensors
    (``Slots.kinds``) and models index tables by them."""

    HIS = 0  # a history review's own embedding
    DIFF = 1  # its difference from other users' reviews of the same item
    USER = 2  # the whole user (PPlug)
    INSTRUCTION = 3  # a learned instruction embedding (PPlug)


HIS, DIFF, USER, INSTRUCTION = SlotKind.HIS, SlotKind.DIFF, SlotKind.USER, SlotKind.INSTRUCTION


@dataclass(frozen=True)
class PromptFamily:
    """A layout of soft-prompt slots, chosen by name (``data.init_args.prompt.embeddings``).

    ``kinds``: the slots each history block carries, in order; ``user_slot``: one instruction
    and one user slot at the top of the user message instead (PPlug's input)."""

    name: str
    kinds: tuple[SlotKind, ...] = ()
    user_slot: bool = False


#: Every prompt family by name. The first three are DEP's ``embeddings`` ablation (paper
#: table 2); ``none`` carries no slot (text-only methods, the history shown as text or not
#: at all); ``user`` is PPlug's. A new family is one entry here and in ``Embeddings``.
PROMPT_FAMILIES: dict[str, PromptFamily] = {f.name: f for f in (
    PromptFamily("his+diff", (HIS, DIFF)),
    PromptFamily("his", (HIS,)),
    PromptFamily("diff", (DIFF,)),
    PromptFamily("none"),
    PromptFamily("user", user_slot=True),
)}
Embeddings = Literal["his", "diff", "his+diff", "none", "user"]  # the names of PROMPT_FAMILIES, for the config parser

HIS_START, HIS_END = "<his_token_start>", "<his_token_end>"
DIFF_START, DIFF_END = "<diff_token_start>", "<diff_token_end>"
USER_START, USER_END = "<user_token_start>", "<user_token_end>"
_SENTINEL = "\ue000"  # private-use character; stripped from every inserted text
_SLOT = re.compile(_SENTINEL + "([" + "".join(str(int(k)) for k in SlotKind) + r"])(\d+)" + _SENTINEL)
_ZERO_WIDTH_SPACE = "\u200b"

TASK = ("Given the title and description of an item, along with the user's past reviews (including {fields}), "
        "and the output review rating and review title, generate a personalized item review for the user.")
#: The guidance note (paper table 9): what each kind of slot means.
NOTES = {HIS: ("[Review Embedding]", "denotes a soft prompt of the review text"),
         DIFF: ("[Review Difference Embedding]", "denotes a soft prompt showing the difference between the review "
                "text and other reviews on the same item"),
         USER: ("[User Embedding]", "denotes a soft prompt of the user's review history")}
NON_PERSO_TASK = ("Given the title and description of an item, and the output review rating and review title, "
                  "generate an item review.")
USER_TASK = ("Given the title and description of an item, the user's embedding, and the output review rating and "
             "review title, generate a personalized item review for the user.")
PROFILE_NOTE = ("[User Profile] is a summary of the user written from their past reviews; it should serve as a hint "
                "for personalized review text generation.")


@dataclass(frozen=True)
class PromptConfig:
    """What the prompt shows.

    Args:
        with_text: show each history review's text (paper "w/ text").
        embeddings: which soft-prompt slots each history block carries; ``user`` gives no
            per-review slots but one instruction slot and one user slot per prompt (PPlug).
        guidance: add the system-prompt note explaining the embeddings (paper table 9).
        max_length: token budget of prompt + target; oldest histories are dropped to fit.
        max_target_tokens: the target review is cut to this many tokens (plus end-of-turn).
        history: show past reviews at all (False gives the non-personalized prompt).
        metadata: show each past review's item title and description, rating and review
            title. ``False`` with ``with_text: False`` leaves the soft prompts as the only
            per-review content, so they are the prompt's only user channel (the
            planted-signal positive control, ``configs/positive_control/``).
    """

    with_text: bool = True
    embeddings: Embeddings = "his+diff"
    guidance: bool = True
    max_length: int = 2048
    max_target_tokens: int = 512
    history: bool = True
    metadata: bool = True

    def __post_init__(self) -> None:
        if self.embeddings not in PROMPT_FAMILIES:
            raise ValueError(f"embeddings must be one of {', '.join(PROMPT_FAMILIES)}, got {self.embeddings!r}")

    @property
    def family(self) -> PromptFamily:
        return PROMPT_FAMILIES[self.embeddings]

    @property
    def kinds(self) -> tuple[SlotKind, ...]:
        """Slot kinds of each history block."""
        return self.family.kinds

    @property
    def user_slot(self) -> bool:
        """One instruction slot and one user slot per prompt (``embeddings: user``)."""
        return self.family.user_slot


@dataclass
class EncodedPrompt:
    """Token ids of one sample; ``slots`` are ``(history_index, kind, position)``.

    ``history_index`` indexes the history list given to :meth:`PromptBuilder.encode`;
    ``kept`` lists the indices that survived the token budget.
    """

    input_ids: list[int]
    labels: list[int]
    slots: list[tuple[int, int, int]]
    kept: list[int]
    prompt_length: int


def _clean(text: str, specials: Sequence[str] = ()) -> str:
    """Data text made safe to render: no sentinel, no special-token strings (see module doc)."""
    text = text.replace(_SENTINEL, "")
    for token in specials:
        if token in text:
            text = text.replace(token, token[0] + _ZERO_WIDTH_SPACE + token[1:])
    return text


def _rating(value: float) -> str:
    return f"{value:.1f}"


class PromptBuilder:
    """Renders samples with a tokenizer's chat template and finds the slot positions."""

    def __init__(self, tokenizer, config: PromptConfig = PromptConfig(), end_of_turn: str = "<|im_end|>"):
        self.tokenizer, self.config = tokenizer, config
        self.end_of_turn_id = tokenizer.convert_tokens_to_ids(end_of_turn)
        if self.end_of_turn_id is None or self.end_of_turn_id == tokenizer.unk_token_id:
            self.end_of_turn_id = tokenizer.eos_token_id
        self.slot_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.end_of_turn_id
        # Token strings the tokenizer turns into control tokens wherever they appear in text.
        added = getattr(tokenizer, "added_tokens_decoder", None) or {}
        self.specials = tuple(sorted({t.content for t in added.values() if len(t.content) > 1}, key=len, reverse=True))

    def clean(self, text: str) -> str:
        """A data text (title, description, review, profile) made safe to render."""
        return _clean(text, self.specials)

    # -- text -------------------------------------------------------------------------
    def system_prompt(self, profile: bool = False) -> str:
        c = self.config
        fields = ["item title", "item description", "review rating", "review title"] if c.metadata else []
        if c.with_text:
            fields.append("review text")
        if HIS in c.kinds:
            fields.append("review embedding")
        if DIFF in c.kinds:
            fields.append("review difference embedding")
        if not c.history:
            text = USER_TASK if c.user_slot else NON_PERSO_TASK
        else:
            text = TASK.format(fields=", ".join(fields))
            if c.user_slot:
                text += " The user's embedding is also given."
        kinds = (c.kinds if c.history else ()) + ((USER,) if c.user_slot else ())
        if c.guidance and kinds:
            notes = " and ".join(f"{NOTES[k][0]} {NOTES[k][1]}" for k in kinds)
            names = " and ".join(NOTES[k][0] for k in kinds)
            text += f"\n\nNote: {notes}. {names} should serve as hints for personalized review text generation."
        if profile:
            text += "\n\n" + PROFILE_NOTE
        return text

    def history_block(self, number: int, review: Review, item_title: str, item_description: str, index: int) -> str:
        lines = [f"[Review {number}]:"]
        if self.config.metadata:
            lines += [f"- [Item Title]: {self.clean(item_title)}",
                      f"- [Item Description]: {self.clean(item_description)}",
                      f"- [Review Rating]: {_rating(review.rating)}",
                      f"- [Review Title]: {self.clean(review.title)}"]
        if self.config.with_text:
            lines.append(f"- [Review Text]: {self.clean(review.text)}")
        if HIS in self.config.kinds:
            lines.append(f"- [Review Embedding]: {HIS_START}{_SENTINEL}{HIS}{index}{_SENTINEL}{HIS_END}")
        if DIFF in self.config.kinds:
            lines.append(f"- [Review Difference Embedding]: {DIFF_START}{_SENTINEL}{DIFF}{index}{_SENTINEL}{DIFF_END}")
        return "\n".join(lines)

    def user_prompt(self, sample: Sample, history: Sequence[Review], kept: Sequence[int], items,
                    profile: str | None = None) -> str:
        parts = []
        if self.config.user_slot:
            # The learned instruction slot, then the user slot (PPlug prepends both to the input).
            slots = f"{_SENTINEL}{INSTRUCTION}0{_SENTINEL}{_SENTINEL}{USER}0{_SENTINEL}"
            parts.append(f"[User Embedding]: {USER_START}{slots}{USER_END}")
        parts += [f"[Item Title]: {self.clean(sample.item.title)}",
                  f"[Item Description]: {self.clean(sample.item.description)}"]
        if self.config.history:
            blocks = []
            for number, index in enumerate(reversed(kept), start=1):  # newest first
                review = history[index]
                item = items(review.item_id, review.category)
                blocks.append(self.history_block(number, review, item.title, item.description, index))
            parts.append("[User's Past Reviews]:\n" + "\n\n".join(blocks))
        if profile is not None:
            parts.append(f"[User Profile]: {self.clean(profile)}")
        parts.append(f"[Output Review Rating]: {_rating(sample.target.rating)}")
        parts.append(f"[Output Review Title]: {self.clean(sample.target.title)}")
        return "\n".join(parts)

    # -- tokens -----------------------------------------------------------------------
    def _tokenize_prompt(self, text_with_sentinels: str) -> tuple[list[int], list[tuple[int, int, int]]]:
        ids: list[int] = []
        slots: list[tuple[int, int, int]] = []
        cursor = 0
        for match in _SLOT.finditer(text_with_sentinels):
            ids += self.tokenizer(text_with_sentinels[cursor:match.start()], add_special_tokens=False).input_ids
            slots.append((int(match.group(2)), SlotKind(int(match.group(1))), len(ids)))
            ids.append(self.slot_token_id)
            cursor = match.end()
        ids += self.tokenizer(text_with_sentinels[cursor:], add_special_tokens=False).input_ids
        return ids, slots

    def render(self, sample: Sample, history: Sequence[Review], kept: Sequence[int], items,
               profile: str | None = None) -> str:
        messages = [{"role": "system", "content": self.system_prompt(profile=profile is not None)},
                    {"role": "user", "content": self.user_prompt(sample, history, kept, items, profile)}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode(self, sample: Sample, history: Sequence[Review], items, with_target: bool = True,
               profile: str | None = None, blind_budget: bool = False) -> EncodedPrompt:
        """Encode ``sample`` with ``history`` (retrieved reviews, ascending time).

        ``items(item_id, category) -> Item`` looks up history items' metadata. ``profile``
        (a text about the user, e.g. an LLM-written summary) adds a ``[User Profile]``
        section after the past reviews; it is kept whole when histories are dropped.

        ``blind_budget`` (test and predict prompts): which histories fit is decided with the
        target's largest possible length (``max_target_tokens`` + end-of-turn) instead of
        its real one, so the prompt never depends on the hidden reference; the target is
        still appended (teacher-forced scoring reads it).
        """
        target: list[int] = []
        if with_target:
            target = self.tokenizer(self.clean(sample.target.text), add_special_tokens=False).input_ids
            target = target[: self.config.max_target_tokens]
            if len(target) < self.config.max_target_tokens or not target:
                target.append(self.end_of_turn_id)
        kept = list(range(len(history))) if self.config.history else []
        reserve = self.config.max_target_tokens + 1 if blind_budget else len(target)
        while True:
            ids, slots = self._tokenize_prompt(self.render(sample, history, kept, items, profile))
            if len(ids) + reserve <= self.config.max_length:
                break
            if not kept:
                raise ValueError(
                    f"sample {sample.sample_id}: prompt of {len(ids)} tokens + target of {reserve} exceeds "
                    f"max_length={self.config.max_length} even without history; raise max_length or lower "
                    f"max_target_tokens")
            kept = kept[1:]  # drop the oldest history first
        labels = [-100] * len(ids) + target
        return EncodedPrompt(ids + target, labels, slots, kept, len(ids))
