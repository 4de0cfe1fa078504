"""A later command written into a fit's run directory keeps the training curve."""

from dep_lightning.training import keep_fit_history


def test_a_fits_metrics_csv_is_kept_once(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "metrics.csv").write_text("step,train/loss\n1,2.0\n")
    keep_fit_history(str(tmp_path))
    assert (tmp_path / "metrics-fit.csv").read_text() == "step,train/loss\n1,2.0\n"
    assert not (tmp_path / "metrics.csv").exists()
    (tmp_path / "metrics.csv").write_text("step,test/x\n")  # the later command's own log
    keep_fit_history(str(tmp_path))
    assert (tmp_path / "metrics-fit.csv").read_text() == "step,train/loss\n1,2.0\n"  # not overwritten


def test_a_directory_without_a_fit_is_left_alone(tmp_path):
    (tmp_path / "metrics.csv").write_text("step\n")
    keep_fit_history(str(tmp_path))
    assert (tmp_path / "metrics.csv").exists() and not (tmp_path / "metrics-fit.csv").exists()
