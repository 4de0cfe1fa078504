"""Every shipped YAML parses against the code it targets, so configs never rot."""

from pathlib import Path

import pytest

from dep_lightning.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
PREPARE = [p for p in CONFIGS if p.parent.name == "prepare"]


def test_every_config_has_a_parser():
    unclaimed = [p for p in CONFIGS if p not in PREPARE]
    assert not unclaimed, f"configs without a parsing test: {unclaimed}"


@pytest.mark.parametrize("path", PREPARE, ids=lambda p: p.name)
def test_prepare_configs_parse_and_instantiate(path):
    parser = build_parser()
    config = parser.parse_args(["prepare", "--config", str(path)])
    init = parser.instantiate_classes(config)
    source = init.prepare.source
    assert type(source).__name__ == config.prepare.source.class_path.rsplit(".", 1)[1]
    assert source.describe()
