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
