"""The positive control's summary: signature recall counts own and other groups' signatures."""

import importlib.util
from pathlib import Path

from dep_lightning.data.synthetic import GROUP_STYLES

ROOT = Path(__file__).resolve().parents[1]


def load_summary_module():
    spec = importlib.util.spec_from_file_location("positive_control_summary",
                                                  ROOT / "scripts" / "positive_control_summary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_signature_recall_counts_own_other_and_none():
    summary = load_summary_module()
    (own_signoff, own_opener, *_), (other_signoff, *_) = GROUP_STYLES[0], GROUP_STYLES[1]
    groups = {"a": own_signoff, "b": own_signoff}
    rows = [{"user_id": "a", "prediction": f"Great record. {own_signoff}"},
            {"user_id": "a", "prediction": f"{own_opener} It was fine and"},  # cut before its end: the opener counts
            {"user_id": "b", "prediction": f"Loved it. {other_signoff}"},
            {"user_id": "b", "prediction": "No signature at all."}]
    recall = summary.signature_recall(rows, groups, "prediction")
    assert recall == {"n": 4, "own": 0.5, "other": 0.25}
    assert summary.signature_recall([], groups, "prediction") == {"n": 0, "own": 0.0, "other": 0.0}


def test_name_recall_reads_the_first_group_name():
    from dep_lightning.data.signatures import group_name_of

    summary = load_summary_module()
    own, other = GROUP_STYLES[0][0], GROUP_STYLES[1][0]
    own_name, other_name = own.split()[2], other.split()[2]
    groups = {"a": own}
    rows = [{"user_id": "a", "prediction": f"{own_name}: a record worth hearing."},
            {"user_id": "a", "prediction": f"{other_name} and then {own_name}."},      # the first name counts
            {"user_id": "a", "prediction": f"{own_name[:-2]}xx, a near miss."},         # whole words only
            {"user_id": "a", "prediction": "Nothing named."}]
    assert summary.signature_recall(rows, groups, "prediction", group_name_of) == {"n": 4, "own": 0.25, "other": 0.25}


def test_opener_choice_columns_read_the_analysis_or_stay_blank():
    summary = load_summary_module()
    assert summary.opener_columns(None).strip() == ""
    choice = {"true": {"own": 0.5, "constant_best": 0.3}, "swap": {"own": 0.25, "swap_follows": 0.4}}
    assert summary.opener_columns(choice).split() == ["0.50", "0.30", "0.25", "0.40"]
