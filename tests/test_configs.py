"""Every shipped YAML parses against the code it targets, so configs never rot."""

from pathlib import Path

import pytest

from dep_lightning.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
PREPARE = [p for p in CONFIGS if p.parent.name == "prepare"]
FIT = [p for p in CONFIGS if p.parent == ROOT / "configs"]
EXPERIMENTS = [p for p in CONFIGS if p.parent.name == "experiment"]
TRAINER = [p for p in CONFIGS if p.parent.name == "trainer"]
BASELINES = [p for p in CONFIGS if p.parent.name == "baselines"]
LOGGERS = [p for p in CONFIGS if p.parent.name == "logger"]
STUDY = [p for p in CONFIGS if p.parent.name == "study"]
POSITIVE_CONTROL = [p for p in CONFIGS if p.parent.name == "positive_control"]
# Study configs that name the data (the rest are overlays layered after one of them).
STUDY_BASES = [p for p in STUDY if "source" in (p.read_text())]


def test_every_config_has_a_parser():
    unclaimed = [p for p in CONFIGS if p not in PREPARE + FIT + EXPERIMENTS + BASELINES + LOGGERS + TRAINER + STUDY
                 + POSITIVE_CONTROL]
    assert not unclaimed, f"configs without a parsing test: {unclaimed}"


@pytest.mark.parametrize("path", PREPARE, ids=lambda p: p.name)
def test_prepare_configs_parse_and_instantiate(path):
    parser = build_parser()
    config = parser.parse_args(["prepare", "--config", str(path)])
    init = parser.instantiate_classes(config)
    source = init.prepare.source
    assert type(source).__name__ == config.prepare.source.class_path.rsplit(".", 1)[1]
    assert source.describe()


def instantiate(configs: list[Path], tmp_path):
    from dep_lightning.training import DEPLightningCLI

    args = [a for p in configs for a in ("--config", str(p))]
    args += ["--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"]
    return DEPLightningCLI(args=args, run=False)


@pytest.mark.parametrize("path", FIT, ids=lambda p: p.name)
def test_fit_configs_instantiate(path, tmp_path):
    cli = instantiate([path], tmp_path)
    assert cli.model.hparams.embedding_dim == cli.datamodule.embedding_dim
    assert cli.datamodule.tokenizer_name == cli.model.hparams.backbone


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_configs_override_the_quickstart(path, tmp_path):
    from omegaconf import OmegaConf

    cli = instantiate([ROOT / "configs" / "quickstart.yaml", path], tmp_path)
    wanted = OmegaConf.to_container(OmegaConf.load(path))
    model, data = cli.model.hparams, cli.datamodule
    for key, value in wanted.get("model", {}).get("init_args", {}).items():
        assert model[key] == value, key
    data_args = wanted.get("data", {}).get("init_args", {})
    for key, value in data_args.get("prompt", {}).items():
        assert getattr(data.prompt, key) == value, key
    if "retriever" in data_args:
        assert type(data.retriever).__name__ == data_args["retriever"]["class_path"].rsplit(".", 1)[1]
    if "k" in data_args:
        assert data.k == data_args["k"]


@pytest.mark.parametrize("path", BASELINES, ids=lambda p: p.name)
def test_baseline_configs_select_their_method(path, tmp_path):
    from omegaconf import OmegaConf

    cli = instantiate([ROOT / "configs" / "quickstart.yaml", path], tmp_path)
    wanted = OmegaConf.to_container(OmegaConf.load(path))
    assert type(cli.model).__name__ == wanted["model"]["class_path"].rsplit(".", 1)[1]
    for key, value in wanted.get("data", {}).get("init_args", {}).get("prompt", {}).items():
        assert getattr(cli.datamodule.prompt, key) == value, key
    if "max_epochs" in wanted.get("trainer", {}):
        assert cli.trainer.max_epochs == wanted["trainer"]["max_epochs"]
    assert cli.model.method_info()["method"] == wanted["model"]["init_args"].get("method", cli.model.method)


def parse_only(configs: list[Path]):
    """The resolved config of ``fit --config ...`` without instantiating anything."""
    from jsonargparse import capture_parser

    from dep_lightning.training import DEPLightningCLI

    parser = capture_parser(lambda: DEPLightningCLI(args=[], run=False))
    return parser.parse_args([a for p in configs for a in ("--config", str(p))])


def test_the_strategy_configs_are_shipped():
    assert {p.name for p in TRAINER} >= {"single_device.yaml", "ddp.yaml", "deepspeed_zero1.yaml",
                                         "deepspeed_zero2.yaml"}


@pytest.mark.parametrize("path", TRAINER, ids=lambda p: p.name)
def test_trainer_configs_layer_on_the_quickstart(path, tmp_path):
    import torch
    from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, SingleDeviceStrategy
    from lightning.pytorch.strategies.deepspeed import _DEEPSPEED_AVAILABLE

    layered = [ROOT / "configs" / "quickstart.yaml", path]
    config = parse_only(layered)  # every key checked against the Trainer's and the strategy's signatures
    strategy = config.trainer.strategy
    if path.name.startswith("deepspeed_zero"):
        assert strategy.class_path.endswith("DeepSpeedStrategy")
        assert strategy.init_args.stage == int(path.stem[-1]) and strategy.init_args.exclude_frozen_parameters is True
        assert config.trainer.precision == "bf16-mixed" and config.trainer.use_distributed_sampler is False
        if not (_DEEPSPEED_AVAILABLE and torch.cuda.is_available()):
            return  # DeepSpeed needs CUDA (scripts/gpu_check.sh runs it on a GPU machine)
    trainer = instantiate(layered, tmp_path).trainer
    expected = {"single_device.yaml": SingleDeviceStrategy, "ddp.yaml": DDPStrategy,
                "deepspeed_zero1.yaml": DeepSpeedStrategy, "deepspeed_zero2.yaml": DeepSpeedStrategy}.get(path.name)
    if expected is not None:
        assert isinstance(trainer.strategy, expected)
    if path.name == "ddp.yaml":
        assert trainer.world_size == 2 and config.trainer.use_distributed_sampler is False
        # gloo on CPU, nccl on CUDA: chosen from the device when left null.
        assert trainer.strategy._get_process_group_backend() == ("nccl" if torch.cuda.is_available() else "gloo")


@pytest.mark.parametrize("path", LOGGERS, ids=lambda p: p.name)
def test_logger_configs_keep_the_run_directory_first_and_wandb_offline(path, monkeypatch):
    from dep_lightning.sweeps.runner import parse_point

    monkeypatch.delenv("DEP_WANDB_OFFLINE", raising=False)
    config = parse_point(["fit", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--config", str(path)])
    loggers = config.trainer.logger
    assert loggers[0].class_path.endswith("CSVLogger"), "the first logger decides the run directory"
    wandb = [lg for lg in loggers if lg.class_path.endswith("WandbLogger")]
    assert wandb and all(lg.init_args.offline is True for lg in wandb)


@pytest.mark.parametrize("path", STUDY_BASES, ids=lambda p: p.name)
def test_study_configs_point_at_the_prepared_data_and_keep_the_method_configs(path):
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(OmegaConf.load(path))
    wanted = raw["data"]["init_args"]
    # With a method config after it, as the study's sweep files layer them.
    config = parse_only([ROOT / "configs" / "quickstart.yaml", path, ROOT / "configs" / "baselines" / "rag.yaml"])
    data = config.data.init_args
    assert data.source.class_path.rsplit(".", 1)[1] == wanted["source"]["class_path"].rsplit(".", 1)[1]
    for key, value in wanted["source"]["init_args"].items():
        assert data.source.init_args[key] == value, key
    for key in ("limit_train", "limit_val", "limit_test"):
        assert data[key] == wanted[key], key
    assert config.model.class_path.endswith("PromptingModule") and data.prompt.embeddings == "none"
    # The study's decoding settings survive the method config's class change.
    for key, value in raw.get("model", {}).get("init_args", {}).get("generation", {}).items():
        assert config.model.init_args.generation[key] == value, key
    prepare = OmegaConf.load(ROOT / "configs" / "prepare" / "musical_instruments.yaml")
    assert data.source.init_args["main"] == f"{prepare.out}/DPL-main"


def test_the_long_training_overlay_changes_only_the_training_budget():
    from omegaconf import OmegaConf

    study = ROOT / "configs" / "study"
    assert set(STUDY) - set(STUDY_BASES) == {study / "long_training.yaml"}
    layers = [ROOT / "configs" / "quickstart.yaml", study / "musical_instruments.yaml"]
    method = ROOT / "configs" / "baselines" / "no_user.yaml"
    short = parse_only(layers + [method])
    long = parse_only(layers + [study / "long_training.yaml", method])
    overlay = OmegaConf.load(study / "long_training.yaml")
    assert long.data.init_args.limit_train == overlay.data.init_args.limit_train > short.data.init_args.limit_train
    assert long.trainer.max_epochs == overlay.trainer.max_epochs > short.trainer.max_epochs
    # Same evaluation subsets, source, decoding and method as the study it extends.
    for key in ("limit_val", "limit_test", "source"):
        assert long.data.init_args[key] == short.data.init_args[key], key
    assert long.model == short.model
    assert long.trainer.default_root_dir != short.trainer.default_root_dir


@pytest.mark.parametrize("overlays", [[], ["no_user"], ["null"], ["no_user", "null"], ["paper_form"],
                                      ["no_user_per_kind"], ["slot_offset"]],
                         ids=lambda o: "+".join(["dep", *o]))
def test_positive_control_configs_instantiate(overlays, tmp_path):
    folder = ROOT / "configs" / "positive_control"
    assert {p.stem for p in POSITIVE_CONTROL} == {"dep", "no_user", "null", "paper_form", "no_user_per_kind",
                                                    "slot_offset"}
    cli = instantiate([folder / "dep.yaml", *[folder / f"{o}.yaml" for o in overlays]], tmp_path)
    model, source, prompt = cli.model, cli.datamodule.source, cli.datamodule.prompt
    control = any(o.startswith("no_user") for o in overlays)
    assert type(model).__name__ == ("NoUserControl" if control else "DEPModule")
    if control:
        assert model.hparams.per_rank == ("no_user_per_kind" not in overlays)
    else:
        assert model.hparams.slot_offset == ("slot_offset" in overlays)
        assert (model.slot_offsets is not None) == ("slot_offset" in overlays)
    assert source.user_signal == (0.0 if "null" in overlays else 1.0) and source.style_groups == 4
    # The soft prompts are the prompt's only user channel.
    assert not prompt.with_text and not prompt.metadata and prompt.embeddings == "his+diff"
    scale = ("none", "none") if "paper_form" in overlays else ("standardize", "token")
    assert (model.hparams.input_norm, model.hparams.prompt_norm) == scale
    assert cli.config.score_after_fit == [True, "swap", "none"]
