"""Copy / echo / limit measurement and the no-model copy baselines on constructed examples."""

import pytest
import torch

from dep_lightning.data.types import Batch, Slots
from dep_lightning.metrics.hygiene import annotate, echoes_prompt, longest_copied_run, summarize
from dep_lightning.models.copy import CopyBaseline

HISTORY = ["the strings on this guitar sound bright and the neck feels fast under my fingers",
           "a solid stand that holds two guitars without wobbling at all"]


def test_longest_copied_run_counts_words_in_order_within_one_source():
    # 10 words copied from HISTORY[0], then 3 from HISTORY[1]
    output = "honestly the strings on this guitar sound bright and the neck wow holds two guitars"
    assert longest_copied_run(output, HISTORY) == 10
    # Words present but out of order are not a run.
    assert longest_copied_run("bright sound guitar this on strings the", HISTORY) == 1
    # A run cannot span two sources.
    assert longest_copied_run("under my fingers a solid stand", HISTORY) == 3
    assert longest_copied_run("", HISTORY) == 0 and longest_copied_run("anything", []) == 0
    # Exact tokens: case and punctuation count.
    assert longest_copied_run("The Strings on this", HISTORY) == 2


def test_echo_detects_prompt_structure_only():
    assert echoes_prompt("[Review Title]: Great strings\n[Review Text]: ...")
    assert echoes_prompt("<his_token_start> something")
    assert echoes_prompt("see [Review 2]: the earlier one")
    assert echoes_prompt("[OutputOutput Rating]: 5.0\n[OutputOutput Rating]: 5.0")  # seen in real outputs
    assert not echoes_prompt("Great strings [really] - 5 stars, would buy again.")
    assert not echoes_prompt("The [Title] track is great.")  # a bracketed word without a label colon


def test_summary_on_constructed_rows():
    rows = [
        {"prediction": " ".join(HISTORY[0].split()[:8]) + " indeed", "history": HISTORY, "hit_limit": True},
        {"prediction": "[Review Title]: Nice", "history": HISTORY, "hit_limit": False},
        {"prediction": "totally new words here", "history": HISTORY, "hit_limit": False},
        {"prediction": "a solid stand that holds", "history": [], "hit_limit": False},  # nothing shown: no copy
    ]
    for row in rows:
        annotate(row, n=8)
    assert [r["longest_copy"] for r in rows] == [8, 0, 0, 0]
    assert [r["copied"] for r in rows] == [True, False, False, False]
    summary = summarize(rows, n=8)
    assert summary == {"n": 4, "copy_n": 8, "copy_rate": 0.25, "mean_longest_copy": 2.0, "limit_rate": 0.25,
                       "echo_rate": 0.25}


@pytest.mark.parametrize("mode, expected", [
    ("recent", ["latest review of user 0", "latest review of user 1"]),
    ("concat", ["old a\n\nnew a", "only b"]),
])
def test_copy_baselines_predict_the_expected_text(mode, expected):
    empty = torch.zeros((2, 0), dtype=torch.long)  # the copy baselines read texts only
    batch = Batch(input_ids=empty, attention_mask=empty, labels=empty, slots=Slots.empty(),
                  sample_id=["c/test/0", "c/test/1"], user_id=["u0", "u1"], item_id=["i0", "i1"],
                  category=["c", "c"], reference=["r0", "r1"], history=[["new a"], ["only b"]],
                  retrieved=[["old a", "new a"], ["only b"]],
                  latest=["latest review of user 0", "latest review of user 1"])
    rows = CopyBaseline(mode=mode).predict_step(batch, 0)
    assert [r["prediction"] for r in rows] == expected
    assert all(r["hit_limit"] is False and r["generated_tokens"] is None for r in rows)
    assert {r["sample_id"] for r in rows} == {"c/test/0", "c/test/1"}


def test_copy_measurement_of_a_copy_baseline_is_total():
    """copy_concat output contains every shown review verbatim: the longest run is the longest review."""
    row = {"prediction": "\n\n".join(HISTORY), "history": HISTORY, "hit_limit": False}
    annotate(row)
    assert row["longest_copy"] == max(len(h.split()) for h in HISTORY) == 15 and row["copied"]
