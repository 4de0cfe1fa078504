"""The forced-choice opener recall: the choice, the constant chooser's share and the margin."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("opener_choice", ROOT / "scripts" / "opener_choice.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summarize_counts_own_choices_margins_and_the_constant_chooser():
    script = load_script()
    own = {"s1": "A", "s2": "A", "s3": "B", "s4": "C"}
    # s1, s3 pick their own group; s2 picks B by 0.5 nats; s4 picks A by 2 nats.
    nll = {"s1": {"A": 1.0, "B": 3.0, "C": 4.0}, "s2": {"A": 2.5, "B": 2.0, "C": 5.0},
           "s3": {"A": 3.0, "B": 1.0, "C": 2.0}, "s4": {"A": 1.0, "B": 4.0, "C": 3.0}}
    result = script.summarize(nll, own)
    assert result["n"] == 4 and result["own"] == 0.5
    assert result["constant_best"] == 0.5  # always choosing A is right for s1 and s2
    assert result["chosen"] == {"A": 2, "B": 2}
    # margins (best other - own): s1 +2, s2 -0.5, s3 +1, s4 -2
    assert result["mean_margin"] == pytest.approx((2 - 0.5 + 1 - 2) / 4, abs=1e-12)


def test_a_constant_chooser_scores_the_share_of_its_group():
    script = load_script()
    own = {f"s{i}": g for i, g in enumerate("AABBBC")}
    nll = {sid: {"A": 2.0, "B": 1.0, "C": 3.0} for sid in own}  # B for everyone
    result = script.summarize(nll, own)
    assert result["own"] == result["constant_best"] == 0.5 and result["chosen"] == {"B": 6}
