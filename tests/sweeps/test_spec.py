"""The shipped W&B sweep files: each a grid whose command lines the CLI accepts; bad sweep files
name the field."""

import math

import pytest

from dep_lightning.data.errors import InputError
from dep_lightning.sweeps.local_grid import expand
from dep_lightning.sweeps.spec import load_spec
from tests.sweeps.helpers import ROOT, write_sweep

SWEEPS = sorted((ROOT / "sweeps").rglob("*.yaml"))
WANDB_KEYS = {"name", "description", "program", "method", "metric", "parameters", "command", "early_terminate",
              "run_cap", "project", "entity"}


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_shipped_sweeps_are_wandb_grids(path):
    import yaml

    raw = yaml.safe_load(path.read_text())
    assert set(raw) <= WANDB_KEYS, set(raw) - WANDB_KEYS
    assert raw["command"][0] == "${env}" and "${args}" in raw["command"]
    spec = load_spec(path)
    assert spec.method == "grid" and spec.subcommand == "fit"
    assert len(spec.grid()) == math.prod(len(p.values) for p in spec.parameters)


@pytest.mark.slow
def test_every_wandb_sweep_expands_to_command_lines_the_cli_accepts(tmp_path):
    from dep_lightning.sweeps.runner import parse_point

    checked = 0
    for path in SWEEPS:
        spec, points = expand(path, root=tmp_path)
        for run_dir, args in points:
            config = parse_point(args)  # raises ValueError if the CLI would reject the line
            assert config.run_dir == str(run_dir)
            for name, value in zip([p.name for p in spec.parameters],
                                   spec.grid()[points.index((run_dir, args))].values()):
                if name == "config":
                    continue
                node = config
                for part in name.split("."):
                    node = node[part]
                assert node == value, (path.name, name)
            checked += 1
    assert checked == sum(len(load_spec(p).grid()) for p in SWEEPS) >= 15


def test_the_cli_rejects_an_expanded_line_with_a_wrong_key(tmp_path):
    from dep_lightning.sweeps.runner import parse_point

    path = write_sweep(tmp_path, "  data.init_args.prompt.embeddingz: {values: [his]}")
    _, [(_, args)] = expand(path, root=tmp_path)
    with pytest.raises(ValueError, match="embeddingz"):
        parse_point(args)


def test_wandb_args_macro_expands_like_wandb(tmp_path):
    path = write_sweep(tmp_path, "  model.init_args.refinement: {values: [sae, none]}\n"
                                 "  data.init_args.prompt.with_text: {values: [true, false]}")
    spec = load_spec(path)
    assert spec.grid()[1] == {"model.init_args.refinement": "sae", "data.init_args.prompt.with_text": False}
    args = spec.cli_args(spec.grid()[1])
    assert args[0] == "fit" and args[-2:] == ["--model.init_args.refinement=sae",
                                              "--data.init_args.prompt.with_text=false"]


@pytest.mark.parametrize("body, field", [
    ("method: sideways\nmetric: {name: m}\nparameters: {a: {values: [1]}}\ncommand: [dep-lightning, fit, '${args}']",
     "method"),
    ("method: grid\nmetric: {name: m}\nparameters: {a: {values: []}}\ncommand: [dep-lightning, fit, '${args}']",
     "parameters.a.values"),
    ("method: grid\nmetric: {name: m}\nparameters: {a: {values: [1]}}\ncommand: [dep-lightning, fit]", "command"),
    ("method: random\nmetric: {name: m}\nparameters: {a: {distribution: log_uniform_values, min: 0, max: 1}}\n"
     "command: [dep-lightning, fit, '${args}']", "parameters.a"),
])
def test_bad_sweep_files_name_the_field(tmp_path, body, field):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(InputError) as info:
        load_spec(path).grid()
    assert info.value.field == field and str(path) in str(info.value)


def test_a_grid_with_a_continuous_parameter_is_refused(tmp_path):
    path = write_sweep(tmp_path, "  model.init_args.lr: {distribution: log_uniform_values, min: 1.0e-4, max: 1.0e-2}")
    with pytest.raises(InputError, match="not a grid"):
        load_spec(path).grid()
