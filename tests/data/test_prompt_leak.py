"""Test prompts never depend on the hidden reference (the token budget reserves a fixed target size)."""

import dataclasses

from dep_lightning.data.prompt import PromptConfig
from dep_lightning.data.schema import PreparedData
from tests.helpers import InMemorySource, small_data, small_datamodule


def with_references(data: PreparedData, words: int) -> PreparedData:
    """The same data with every test target's text replaced by ``words`` words."""
    rows = {c: dict(splits) for c, splits in data.rows.items()}
    for category, splits in rows.items():
        splits["test"] = [dataclasses.replace(row, target=dataclasses.replace(row.target, text="word " * words))
                          for row in splits["test"]]
    return PreparedData(rows=rows, items=data.items)


def prompts(tmp_path, data, split):
    # A budget so tight that histories are dropped to fit: the case where a leak would show.
    dm = small_datamodule(tmp_path, source=InMemorySource(data), k=3, limit_test=None, limit_train=None,
                          prompt=PromptConfig(max_length=600, max_target_tokens=160))
    return {e.sample_id: (e.input_ids[:e.prompt_length], len(e.history))
            for e in dm.split_examples(split)}


def test_test_prompts_are_identical_whatever_the_reference(tmp_path):
    data = small_data()
    short, long = (prompts(tmp_path, with_references(data, 5), "test"),
                   prompts(tmp_path, with_references(data, 150), "test"))
    assert short.keys() == long.keys() and len(short) > 10
    assert all(short[k] == long[k] for k in short)
    # The budget binds here: some prompts show fewer than the k = 3 retrieved reviews.
    assert any(shown < 3 for _, shown in short.values())


def test_the_check_can_fail_training_prompts_use_the_real_target(tmp_path):
    """Training keeps budgeting with the real target, so a longer target drops more history."""
    data = small_data()
    rows = {c: dict(splits) for c, splits in data.rows.items()}
    for splits in rows.values():
        splits["train"] = [dataclasses.replace(row, target=dataclasses.replace(row.target, text="word " * 150))
                           for row in splits["train"]]
    before, after = (prompts(tmp_path, data, "train"),
                     prompts(tmp_path, PreparedData(rows=rows, items=data.items), "train"))
    assert any(before[k][1] > after[k][1] for k in before)
