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
PAPER = [p for p in CONFIGS if p.parent.name == "paper"]
# Study configs that name the data (the rest are overlays layered after one of them).
STUDY_BASES = [p for p in STUDY if "source" in (p.read_text())]


def test_every_config_has_a_parser():
    unclaimed = [p for p in CONFIGS if p not in PREPARE + FIT + EXPERIMENTS + BASELINES + LOGGERS + TRAINER + STUDY
                 + POSITIVE_CONTROL + PAPER]
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
    assert set(STUDY) - set(STUDY_BASES) == {study / "long_training.yaml", study / "v2.yaml", study / "v2_dep.yaml"}
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


def test_the_second_edition_overlay_trains_on_every_user_and_stops_on_validation_nll():
    from omegaconf import OmegaConf

    study = ROOT / "configs" / "study"
    layers = [ROOT / "configs" / "quickstart.yaml", study / "musical_instruments.yaml"]
    method = ROOT / "configs" / "baselines" / "no_user.yaml"
    first = parse_only(layers + [method])
    second = parse_only(layers + [study / "v2.yaml", method])
    data = second.data.init_args
    assert data.limit_train is None and data.limit_val == 128 and data.limit_test == 96
    assert second.score_after_fit == [True, "swap", "none"]
    callbacks = {c.class_path.rsplit(".", 1)[1]: c.init_args for c in second.trainer.callbacks}
    assert (callbacks["EarlyStopping"].monitor, callbacks["EarlyStopping"].mode) == ("val/nll", "min")
    checkpoints = [c.init_args for c in second.trainer.callbacks if c.class_path.endswith(".ModelCheckpoint")]
    # The ModelCheckpoint (the trainer's checkpoint_callback, tested after the fit) keeps the best by
    # val/nll; LastCheckpoint writes last.ckpt at every validation and every 10 steps between
    # (test_study_checkpoints.py runs both).
    assert [(c.monitor, c.save_last) for c in checkpoints] == [("val/nll", False)]
    assert callbacks["LastCheckpoint"].every_n_train_steps == 10
    assert "GenerationEvaluator" not in callbacks  # no generation during validation
    assert second.model.init_args.backbone_options["generation_backend"] == "auto"
    assert second.model.init_args.backbone_dtype == "float32"  # one dtype across the study's machines
    assert first.model.init_args.backbone_options["generation_backend"] == "hf"  # the first edition's outputs
    # The same corpus, decoding and method as the first edition.
    assert data.source == first.data.init_args.source and second.model.class_path == first.model.class_path
    assert second.model.init_args.generation == first.model.init_args.generation
    assert second.trainer.default_root_dir != first.trainer.default_root_dir
    dep = parse_only(layers + [study / "v2.yaml", study / "v2_dep.yaml"])
    assert dep.score_after_fit == OmegaConf.load(study / "v2_dep.yaml").score_after_fit
    assert dep.model.init_args.refinement == "sae" and dep.data.init_args.prompt.embeddings == "his+diff"


@pytest.mark.parametrize("name", ["seed0", "prompting", "generation_only", "seeds", "ablations"])
def test_the_second_edition_sweeps_parse_point_by_point(name, tmp_path, monkeypatch):
    from dep_lightning.sweeps.local_grid import expand
    from dep_lightning.sweeps.runner import parse_point

    monkeypatch.chdir(ROOT)
    spec, points = expand(ROOT / "sweeps" / "study_v2" / f"{name}.yaml", root=tmp_path)
    assert points and len(points) == len(spec.grid())
    for run_dir, args in points:
        config = parse_point(args)
        assert config.run_dir == str(run_dir)
        assert config.data.init_args.limit_train is None and config.trainer.default_root_dir == "runs/study_v2"
        trained = config.trainer.max_epochs > 0
        assert (config.fit.ckpt_path if "fit" in config else config.ckpt_path) == ("last" if trained else None)
        if name == "generation_only":  # the copy baselines (no likelihood) and DPL (its stages' cost)
            assert config.score_after_fit is None
        else:
            assert config.score_after_fit[:3] == [True, "swap", "none"]


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


# -- the paper preset (configs/paper/, sweeps/paper/, docs/paper_preset.md) ----------------

PAPER_DIR = ROOT / "configs" / "paper"


def assert_paper_setting(config) -> None:
    """The values that define the paper's setting, on a parsed ``fit`` config."""
    model, data, trainer = config.model.init_args, config.data.init_args, config.trainer
    assert model.backbone == "Qwen/Qwen2.5-7B-Instruct" and model.backbone_dtype == "bfloat16"
    options = dict(model.backbone_options)
    assert {k: options[k] for k in ("attn_implementation", "gradient_checkpointing", "allow_download")} == {
        "attn_implementation": "sdpa", "gradient_checkpointing": True, "allow_download": False}
    assert options.get("generation_backend", "auto") == "auto"  # hf on the GPUs it runs on
    assert (model.latent_dim, model.rho, model.lam, model.gamma) == (512, 0.05, 100.0, 0.001)
    assert (model.lr, model.weight_decay, model.warmup_ratio) == (1e-5, 0.025, 0.01)
    assert dict(model.generation) == {"max_new_tokens": 2048, "do_sample": True, "temperature": 0.8, "top_p": 0.95,
                                      "seed": 0}
    assert data.embedder.model.endswith("bge-m3") and (data.embedder.pooling, data.embedder.normalize) == ("cls", True)
    assert data.k == 8 and data.val_size == 512
    # Prompt cap: a test prompt is sized for the longest target (max_target_tokens + end-of-turn).
    assert data.prompt.max_length - (data.prompt.max_target_tokens + 1) == 3072
    assert data.prompt.max_target_tokens == 2048
    assert data.source.class_path.endswith("DPLSource")
    assert data.source.init_args.categories == ["Books", "Movies_and_TV", "CDs_and_Vinyl"]
    assert (trainer.accelerator, trainer.devices, trainer.num_nodes) == ("gpu", 8, 1)
    assert trainer.strategy.class_path == "lightning.pytorch.strategies.DDPStrategy"
    assert trainer.use_distributed_sampler is False
    assert (trainer.precision, trainer.max_epochs) == ("bf16-mixed", 5)
    # Effective batch: per-device batch x GPUs x machines x accumulation = the paper's 16.
    assert data.batch_size * trainer.devices * trainer.num_nodes * trainer.accumulate_grad_batches == 16
    assert (data.batch_size, trainer.accumulate_grad_batches) == (1, 2)


def assert_last_at_every_validation(checkpoint, last):
    """The best checkpoint first (the trainer's ``checkpoint_callback``, which ``test`` uses), then
    an unmonitored one writing ``last.ckpt`` at every validation (test_study_checkpoints.py)."""
    assert checkpoint.init_args.save_last is False and checkpoint.init_args.save_top_k == 1
    assert (last.init_args.monitor, last.init_args.save_last, last.init_args.filename) == (None, True, "latest")


def test_the_paper_preset_parses_to_the_paper_setting():
    assert {p.stem for p in PAPER} == {"dep", "meteor_validation", "wandb"}
    config = parse_only([PAPER_DIR / "dep.yaml"])
    assert_paper_setting(config)
    model, prompt = config.model, config.data.init_args.prompt
    assert model.class_path == "dep_lightning.models.dep_module.DEPModule" and model.init_args.refinement == "sae"
    assert config.data.init_args.retriever.class_path.endswith("RecencyRetriever")
    assert (prompt.with_text, prompt.embeddings, prompt.guidance) == (True, "his+diff", True)
    checkpoint, last = [c for c in config.trainer.callbacks if c.class_path.endswith("ModelCheckpoint")]
    assert (checkpoint.init_args.monitor, checkpoint.init_args.mode) == ("val/nll", "min")
    assert_last_at_every_validation(checkpoint, last)
    # No generation during validation (the paper's alternative is meteor_validation.yaml).
    assert not [c for c in config.trainer.callbacks if c.class_path.endswith("GenerationEvaluator")]
    assert config.test_after_fit is True


@pytest.fixture(scope="module")
def embedder_1024(tmp_path_factory):
    """A tiny random sentence-transformers folder with bge-m3's output size (1,024)."""
    from dep_lightning.embeddings.tiny import tiny_sentence_model

    return tiny_sentence_model(dim=1024, root=tmp_path_factory.mktemp("embedders"))


def paper_stand_ins(path, embedder, cache_dir):
    """An overlay for configs/paper/dep.yaml: the tiny backbone for Qwen2.5-7B, a 1,024-d tiny
    embedder for bge-m3, and the CPU for the GPUs (still 8 DDP processes, bf16-mixed)."""
    path.write_text(f"""
model: {{init_args: {{backbone: tiny}}}}
data: {{init_args: {{embedder: {{model: {embedder}}}, cache_dir: {cache_dir}}}}}
trainer: {{accelerator: cpu}}
""")
    return path


def test_the_paper_preset_instantiates_with_tiny_stand_ins(tmp_path, embedder_1024):
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.strategies import DDPStrategy

    overlay = paper_stand_ins(tmp_path / "stand_ins.yaml", embedder_1024, tmp_path / "embeddings")
    cli = instantiate([PAPER_DIR / "dep.yaml", overlay], tmp_path)
    model, data, trainer = cli.model, cli.datamodule, cli.trainer
    # bge-m3's 1,024-d vectors into the SAE's 512-d latent (embedding_dim is linked from the embedder).
    assert model.hparams.embedding_dim == data.embedding_dim == 1024
    assert model.refiner.d_latent == 512 and model.hparams.latent_dim == 512
    assert model.hparams.lr == 1e-5 and model.generation.max_new_tokens == 2048
    assert (model.generation.temperature, model.generation.top_p, model.generation.do_sample) == (0.8, 0.95, True)
    assert model.backbone_options.gradient_checkpointing and model.backbone_options.attn_implementation == "sdpa"
    assert not model.backbone_options.allow_download
    assert data.tokenizer_name == model.hparams.backbone == "tiny"
    assert data.k == 8 and data.prompt.max_length - data.prompt.max_target_tokens - 1 == 3072
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.world_size == 8 and trainer.num_nodes == 1
    assert trainer.precision == "bf16-mixed" and trainer.max_epochs == 5
    assert data.batch_size * trainer.world_size * trainer.accumulate_grad_batches == 16
    checkpoint, last = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
    assert (checkpoint.monitor, checkpoint.mode) == ("val/nll", "min") and trainer.checkpoint_callback is checkpoint
    assert last.monitor is None and last.save_last is True


def test_the_paper_prompt_cap_is_3072_tokens_at_test(tokenizer):
    """Test prompts never exceed 3,072 tokens (histories are dropped to fit); training prompts
    are sized with their real target, so prompt + target <= 5,121."""
    from dep_lightning.data.prompt import PromptBuilder, PromptConfig
    from dep_lightning.data.schema import Item, Review, Sample

    prompt = parse_only([PAPER_DIR / "dep.yaml"]).data.init_args.prompt
    builder = PromptBuilder(tokenizer, PromptConfig(**dict(prompt)))
    history = tuple(Review("U1", f"I{i}", 4.0, f"title {i}", f"review {i} says the pacing drags. " * 60, 1000 + i)
                    for i in range(8))
    sample = Sample("Books/test/0", "test", "Books", "U1", Review("U1", "T", 5.0, "Fine", "Short target.", 9999),
                    Item("T", "Target Book", "A book."), history)

    def items(item_id, category=""):
        return Item(item_id, f"Item {item_id}", f"Description of {item_id}.", category)

    test = builder.encode(sample, history, items, blind_budget=True)
    train = builder.encode(sample, history, items)
    assert 0 < len(test.kept) < len(history), "the eight long histories must not all fit"
    assert 3072 - 700 < test.prompt_length <= 3072  # one history block is ~600 tokens
    assert test.prompt_length < train.prompt_length and len(train.input_ids) <= 5121


def test_the_paper_meteor_validation_overlay_selects_by_validation_meteor_on_all_samples():
    base = parse_only([PAPER_DIR / "dep.yaml"])
    config = parse_only([PAPER_DIR / "dep.yaml", PAPER_DIR / "meteor_validation.yaml"])
    assert_paper_setting(config)
    callbacks = config.trainer.callbacks
    [evaluator] = [c for c in callbacks if c.class_path.endswith("GenerationEvaluator")]
    assert evaluator.init_args.max_samples is None and evaluator.init_args.every_n_epochs == 1
    checkpoint, last = [c for c in callbacks if c.class_path.endswith("ModelCheckpoint")]
    assert (checkpoint.init_args.monitor, checkpoint.init_args.mode) == ("val/meteor", "max")
    assert_last_at_every_validation(checkpoint, last)
    # Only the checkpoint criterion changes: the other callbacks, the model and the data stay.
    others = [c for c in callbacks if not c.class_path.endswith(("GenerationEvaluator", "ModelCheckpoint"))]
    assert others == [c for c in base.trainer.callbacks if not c.class_path.endswith("ModelCheckpoint")]
    assert config.model == base.model and config.data == base.data


def test_the_paper_wandb_overlay_keeps_the_csv_run_directory_first_and_offline(monkeypatch):
    from dep_lightning.sweeps.runner import parse_point

    monkeypatch.delenv("DEP_WANDB_OFFLINE", raising=False)
    config = parse_point(["fit", "--config", str(PAPER_DIR / "dep.yaml"), "--config", str(PAPER_DIR / "wandb.yaml")])
    loggers = config.trainer.logger
    assert loggers[0].class_path.endswith("CSVLogger") and loggers[0].init_args.name == "paper"
    wandb = [lg for lg in loggers if lg.class_path.endswith("WandbLogger")]
    assert wandb and all(lg.init_args.offline is True for lg in wandb)
    assert_paper_setting(config)


@pytest.mark.parametrize("overlay, key, value", [
    ("experiment/table3_ae.yaml", "model.init_args.refinement", "ae"),
    ("experiment/table3_no_dr.yaml", "model.init_args.refinement", "none"),
    ("experiment/table2_his_without_text.yaml", "data.init_args.prompt.with_text", False),
    ("experiment/table9_no_guidance.yaml", "data.init_args.prompt.guidance", False),
    ("experiment/retrieval_bm25.yaml", "data.init_args.retriever.class_path",
     "dep_lightning.data.retrieval.BM25Retriever"),
    ("baselines/no_user.yaml", "model.class_path", "dep_lightning.models.NoUserControl"),
], ids=lambda v: str(v))
def test_ablation_overlays_layer_on_the_paper_preset(overlay, key, value):
    config = parse_only([PAPER_DIR / "dep.yaml", ROOT / "configs" / overlay])
    node = config
    for part in key.split("."):
        node = node[part]
    assert node == value
    assert_paper_setting(config)  # the class change of no_user.yaml keeps the shared init_args


@pytest.mark.parametrize("name, parameters", [
    ("table3_refinement", {"model.init_args.refinement": ["sae", "ae", "none"]}),
    ("table2_embeddings", {"data.init_args.prompt.embeddings": ["his", "diff", "his+diff"],
                           "data.init_args.prompt.with_text": [True, False]}),
])
def test_paper_sweeps_run_their_grid_on_the_paper_preset(name, parameters, tmp_path, monkeypatch):
    import yaml

    from dep_lightning.sweeps.local_grid import expand
    from dep_lightning.sweeps.runner import parse_point

    monkeypatch.chdir(ROOT)  # the sweep files name configs relative to the repository root
    path = ROOT / "sweeps" / "paper" / f"{name}.yaml"
    raw = yaml.safe_load(path.read_text())
    command = raw["command"]
    assert command[command.index("--config") + 1] == "configs/paper/dep.yaml"
    spec, points = expand(path, root=tmp_path)
    assert {p.name: list(p.values) for p in spec.parameters} == {**parameters, "seed_everything": [0]}
    assert len(points) == len(spec.grid())
    for (run_dir, args), params in zip(points, spec.grid()):
        config = parse_point(args)
        assert config.run_dir == str(run_dir)
        for key, value in params.items():
            node = config
            for part in key.split("."):
                node = node[part]
            assert node == value, key
        assert_paper_setting(config)


def test_the_paper_preset_takes_the_papers_deepspeed_zero1_strategy(tmp_path):
    """docs/paper_preset.md: the paper's exact strategy is configs/trainer/deepspeed_zero1.yaml
    after the preset (with devices 8; that file says -1, every visible GPU)."""
    devices = tmp_path / "devices.yaml"
    devices.write_text("trainer: {devices: 8}\n")
    config = parse_only([PAPER_DIR / "dep.yaml", ROOT / "configs" / "trainer" / "deepspeed_zero1.yaml", devices])
    trainer, data = config.trainer, config.data.init_args
    assert trainer.strategy.class_path.endswith("DeepSpeedStrategy") and trainer.strategy.init_args.stage == 1
    assert trainer.precision == "bf16-mixed" and trainer.use_distributed_sampler is False
    assert data.batch_size * trainer.devices * trainer.num_nodes * trainer.accumulate_grad_batches == 16
    assert config.model == parse_only([PAPER_DIR / "dep.yaml"]).model
