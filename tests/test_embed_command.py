"""``dep-lightning embed``: fills the cache fit reads, from fit's own configs, on N processes."""

from pathlib import Path

import numpy as np
import pytest

from dep_lightning.cli import main
from tests.helpers import finish_cli, launch_cli, tiny_override
from tests.tolerances import TINY_ENCODER_F32_TOL

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"


def configs(tmp_path, cache) -> list[str]:
    override = tiny_override(tmp_path / "tiny.yaml", cache)
    return ["--config", str(QUICKSTART), "--config", str(override)]


def test_embed_fills_the_cache_that_fit_then_reads(tmp_path, capsys):
    from dep_lightning.training import DEPLightningCLI

    cache = tmp_path / "cache"
    main(["embed", *configs(tmp_path, cache), "--embed.devices", "1"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("embed: ") and "(dim 32, tiny-bert-32-seed0, float32)" in line, line
    written = int(line.split()[1].replace(",", ""))
    assert written > 0 and line.endswith(f"; {written:,} new")

    # The fit path with the same configs: everything it looks up is there.
    cli = DEPLightningCLI(args=[*configs(tmp_path, cache), "--trainer.default_root_dir", str(tmp_path),
                                "--trainer.logger", "false"], run=False)
    dm = cli.datamodule
    dm.prepare_data()
    assert dm.cache.encoded_texts == 0 and len(dm.cache) == written

    main(["embed", *configs(tmp_path, cache)])  # again: nothing new
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("; 0 new")


def test_embed_reports_a_bad_setting_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["embed", *configs(tmp_path, tmp_path / "cache"), "--data.init_args.k", "-1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "k" in err and "-1" in err, err


@pytest.mark.slow
def test_embed_on_two_processes_equals_one(tmp_path):
    """Two gloo processes share the encoding (each started by Lightning's launcher running
    the same command); the cache then holds the same texts and vectors as one process."""
    from dep_lightning.embeddings.cache import EmbeddingCache
    from dep_lightning.embeddings.embedder import SentenceEmbedder

    single, double = tmp_path / "one", tmp_path / "two"
    for cache, devices, strategy in ((single, "1", "auto"), (double, "2", "ddp")):
        args = ["embed", *configs(tmp_path, cache), "--embed.accelerator", "cpu", "--embed.devices", devices,
                "--embed.strategy", strategy]
        out = finish_cli(launch_cli(args, tmp_path), timeout=600)
        assert out.count("embed: ") == 1, out[-2000:]  # one summary line, from rank 0
    one, two = (EmbeddingCache(c, SentenceEmbedder(model="tiny")).by_key() for c in (single, double))
    assert one.keys() == two.keys() and len(one) > 0
    # Other batch shapes on two processes: float32 passes of the tiny encoder (tests/tolerances.py).
    np.testing.assert_allclose(np.stack([two[k] for k in one]), np.stack(list(one.values())), rtol=0,
                               atol=TINY_ENCODER_F32_TOL)
