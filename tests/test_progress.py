"""LogProgress lines name the loop they follow: a scoring run says which condition it scores."""

from types import SimpleNamespace

from dep_lightning.callbacks.progress import LogProgress


def run_test_loop(progress, module, batches=(2, 2)):
    trainer = SimpleNamespace(is_global_zero=True, num_test_batches=list(batches), current_epoch=0)
    progress.on_test_epoch_start(trainer, module)
    for loader, total in enumerate(batches):
        for index in range(total):
            progress.on_test_batch_end(trainer, module, None, None, index, loader)


def test_test_and_score_loops_are_labelled(capsys):
    run_test_loop(LogProgress(every_n_seconds=0, always=True), SimpleNamespace())
    run_test_loop(LogProgress(every_n_seconds=0, always=True), SimpleNamespace(scoring_conditions=["true", "swap"]))
    lines = [line.split(" (")[0] for line in capsys.readouterr().out.splitlines()]
    assert lines == ["[test] batch 1/2", "[test] batch 2/2", "[test] batch 1/2", "[test] batch 2/2",
                     "[score true] batch 1/2", "[score true] batch 2/2", "[score swap] batch 1/2",
                     "[score swap] batch 2/2"]


def test_a_fit_resumed_mid_epoch_still_reports_its_progress(capsys, monkeypatch):
    """Lightning skips on_train_epoch_start in the epoch a fit resumes in: the lines still come,
    every ``every_n_seconds``, with the rate of the batches this process trained."""
    import dep_lightning.callbacks.progress as progress

    clock = iter([0.0, 30.0, 100.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    log = LogProgress(every_n_seconds=60, always=True)
    trainer = SimpleNamespace(is_global_zero=True, num_training_batches=10, current_epoch=1, callback_metrics={})
    for index in (4, 5, 6):  # resumed after 4 batches of epoch 1; the clock reads 0, 30, 100
        log.on_train_batch_end(trainer, None, None, None, index)
    assert capsys.readouterr().out.splitlines() == ["[train] epoch 1 batch 7/10 (70%) 50.0 s/batch, eta 2m30s"]
