"""What DeepSpeed leaves a LightningModule as, reproduced on CPU: the whole module cast to
bf16 (ZeRO casts every parameter and buffer, adapters included), and checkpoints in its
folder layout. Each method must train a step and generate from such a module, and test /
resume must load such a checkpoint."""

from __future__ import annotations

import pytest
import torch

from dep_lightning.data.prompt import PromptConfig
from dep_lightning.models.dep_module import DEPModule, GenerationConfig, NoUserControl
from dep_lightning.models.pplug import PPlugModule
from tests.helpers import set_up

GENERATION = GenerationConfig(max_new_tokens=4, do_sample=False)


@pytest.fixture(scope="module")
def dep_data(tmp_path_factory):
    return set_up("fit", tmp_path_factory.mktemp("dep"))


@pytest.fixture(scope="module")
def pplug_data(tmp_path_factory):
    return set_up("fit", tmp_path_factory.mktemp("pplug"), prompt=PromptConfig(
        embeddings="user", history=False, with_text=False, max_target_tokens=16))


def build(name: str, dm, **kwargs):
    common = dict(backbone="tiny", embedding_dim=dm.embedding_dim, generation=GENERATION)
    if name == "pplug":
        return PPlugModule(**common, **kwargs)
    return (DEPModule if name == "dep" else NoUserControl)(latent_dim=16, **common, **kwargs)


CASES = [("dep", {}), ("dep", {"input_norm": "standardize", "prompt_norm": "token"}),
         ("no_user", {}), ("pplug", {})]


@pytest.mark.parametrize("name, kwargs", CASES, ids=["dep", "dep-scaled", "no_user", "pplug"])
def test_a_bf16_cast_module_trains_a_step_and_generates(name, kwargs, dep_data, pplug_data):
    dm = pplug_data if name == "pplug" else dep_data
    model = build(name, dm, **kwargs).bfloat16()  # what DeepSpeed's engine does to the module
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    batch = next(iter(dm.train_dataloader()))
    loss = model.loss(batch) if name == "pplug" else model.losses(batch)["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    trained = [p for p in model.parameters() if p.requires_grad]
    assert trained and all(p.grad is not None and p.grad.dtype == torch.bfloat16 for p in trained)
    assert any(bool(p.grad.abs().sum() > 0) for p in trained)
    prompt = next(iter(dm.test_dataloader())).prompt
    texts = model.generate(prompt, key="bf16")
    assert len(texts) == prompt.input_ids.shape[0] and all(isinstance(t, str) for t in texts)
