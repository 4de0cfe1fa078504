"""DEPModule: frozen backbone, falling loss per refinement, checkpoints of trainable weights only."""

import lightning as L
import pytest
import torch

from dep_lightning.data.prompt import PromptConfig
from dep_lightning.models.dep_module import DEPModule, GenerationConfig
from tests.helpers import set_up, small_datamodule


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    return set_up("fit", tmp_path_factory.mktemp("embeddings"))


@pytest.fixture(scope="module")
def batch(datamodule):
    return next(iter(datamodule.val_dataloader()))


def module(datamodule, **kwargs):
    settings = dict(backbone="tiny", embedding_dim=datamodule.embedding_dim, latent_dim=16, lr=1e-2,
                    generation=GenerationConfig(max_new_tokens=12, do_sample=False))
    settings.update(kwargs)
    return DEPModule(**settings)


def trainer(tmp_path, **kwargs):
    settings = dict(accelerator="cpu", max_steps=3, logger=False, enable_progress_bar=False,
                    enable_model_summary=False, limit_val_batches=1, num_sanity_val_steps=0,
                    default_root_dir=str(tmp_path))
    settings.update(kwargs)
    return L.Trainer(**settings)


def test_only_adapters_learn_and_backbone_stays_bit_identical(datamodule, tmp_path):
    model = module(datamodule)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.split(".")[0] in {"refiner", "proj_his", "proj_diff"} for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer(tmp_path, enable_checkpointing=False).fit(model, datamodule)
    for name, param in model.named_parameters():
        if name.startswith("backbone."):
            assert torch.equal(param, before[name]), name
            assert param.grad is None, name
        else:
            assert not torch.equal(param, before[name]), f"{name} did not train"
    share = sum(p.numel() for p in model.parameters() if p.requires_grad) / sum(p.numel() for p in model.parameters())
    assert share < 0.05


@pytest.fixture(scope="module")
def short_batch(tmp_path_factory):
    """One short training sequence (one history, no review text) so 30 steps take seconds."""
    dm = small_datamodule(tmp_path_factory.mktemp("short"), k=1, batch_size=1,
                          prompt=PromptConfig(with_text=False, max_target_tokens=16))
    dm.setup("fit")
    return dm.embedding_dim, next(iter(dm.train_dataloader()))


@pytest.mark.parametrize("refinement", ["sae", "ae", "none"])
def test_loss_falls_on_a_fixed_batch(short_batch, refinement):
    dim, batch = short_batch
    model = DEPModule(backbone="tiny", embedding_dim=dim, latent_dim=16, refinement=refinement)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    first = model.losses(batch)
    for _ in range(30):
        optimizer.zero_grad()
        model.losses(batch)["loss"].backward()
        optimizer.step()
    last = model.losses(batch)
    # The generation loss itself falls: the soft prompts carry signal to the frozen LLM.
    assert last["loss_gen"].item() < first["loss_gen"].item() - 0.2
    assert last["loss"].item() < first["loss"].item()
    if refinement == "sae":
        assert 0 < last["loss_sparse"].item() < first["loss_sparse"].item()
    else:
        assert last["loss_sparse"].item() == 0.0
    if refinement == "none":
        assert last["loss_recon"].item() == 0.0
    else:
        assert last["loss_recon"].item() < 0.5 * first["loss_recon"].item()


def test_checkpoint_reloads_to_identical_greedy_generations(datamodule, batch, tmp_path):
    model = module(datamodule)
    fit = trainer(tmp_path, enable_checkpointing=False)
    fit.fit(model, datamodule)
    path = tmp_path / "adapters.ckpt"
    fit.save_checkpoint(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert not any(k.startswith("backbone.") for k in state["state_dict"])
    assert set(state["state_dict"]) == model.trainable_state_keys()
    backbone_bytes = sum(p.numel() * p.element_size() for p in model.backbone.parameters())
    assert path.stat().st_size < 0.05 * backbone_bytes, (path.stat().st_size, backbone_bytes)

    reloaded = DEPModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    model.eval(), reloaded.eval()
    first = model.generate(batch.prompt, key="k")
    assert first == reloaded.generate(batch.prompt, key="k")
    assert any(first)
    for name, param in reloaded.named_parameters():
        assert torch.equal(param, dict(model.named_parameters())[name]), name


def test_checkpoint_of_another_shape_is_refused(datamodule, tmp_path):
    model = module(datamodule)
    path = tmp_path / "ae.ckpt"
    trainer(tmp_path, max_steps=1, enable_checkpointing=False).fit(model, datamodule)
    model.trainer.save_checkpoint(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    state["state_dict"] = {k: v for k, v in state["state_dict"].items() if not k.startswith("proj_diff")}
    torch.save(state, path)
    with pytest.raises(KeyError, match="lacks trainable weights"):
        DEPModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)


def test_sampling_is_seeded(datamodule, batch):
    model = module(datamodule, generation=GenerationConfig(max_new_tokens=10, do_sample=True, seed=3)).eval()
    assert model.generate(batch.prompt, key="a") == model.generate(batch.prompt, key="a")


@pytest.mark.parametrize("model_class", ["DEPModule", "NoUserControl"])
def test_a_batch_without_soft_prompts_trains_with_zero_gradients(tmp_path_factory, model_class):
    """Every history dropped for the length budget (here: K = 0) leaves no soft prompt: the step
    must still run (it crashed with "element 0 of tensors does not require grad")."""
    from dep_lightning.models import dep_module

    dm = small_datamodule(tmp_path_factory.mktemp("nohistory"), k=0, batch_size=1,
                          prompt=PromptConfig(with_text=False, max_target_tokens=16))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.slots.positions.numel() == 0
    model = getattr(dep_module, model_class)(backbone="tiny", embedding_dim=dm.embedding_dim, latent_dim=16)
    loss = model.training_step(batch, 0)
    assert loss.requires_grad and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.trainable_parameters()]
    assert grads and all(g is not None and float(g.abs().max()) == 0.0 for g in grads)
    # And through the Trainer: two optimizer steps on such batches.
    L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
              limit_val_batches=0, num_sanity_val_steps=0, enable_checkpointing=False).fit(model, dm)
