"""``backbone_options``: gradient checkpointing, the attention kernel, explicit downloads."""

import pytest
import torch
import torch.utils.checkpoint

from dep_lightning.models.backbone import BackboneOptions, load_backbone, tiny_backbone
from dep_lightning.models.dep_module import DEPModule, GenerationConfig
from tests.helpers import set_up
from tests.models.test_lm_loss import LOSS_RTOL, grad_atol


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    return set_up("fit", tmp_path_factory.mktemp("embeddings"))


@pytest.fixture(scope="module")
def batch(datamodule):
    return next(iter(datamodule.train_dataloader()))


def dep(datamodule, **options):
    return DEPModule(backbone="tiny", embedding_dim=datamodule.embedding_dim, latent_dim=16,
                     generation=GenerationConfig(max_new_tokens=6, do_sample=False), backbone_options=options)


def loss_and_grads(model, batch):
    losses = model.losses(batch)
    losses["loss"].backward()
    return losses["loss"].detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture
def checkpoint_calls(monkeypatch):
    calls = []
    original = torch.utils.checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    return calls


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(datamodule, batch, checkpoint_calls):
    plain = dep(datamodule)
    checkpointed = dep(datamodule, gradient_checkpointing=True)
    assert plain.cache_shared_prefix and not checkpointed.cache_shared_prefix
    assert batch.prefix_length > 0  # the plain model reads the shared prefix from its KV cache
    ref_loss, ref_grads = loss_and_grads(plain, batch)
    assert not checkpoint_calls
    loss, grads = loss_and_grads(checkpointed, batch)
    # One checkpoint per decoder layer, in the training pass only.
    assert len(checkpoint_calls) == checkpointed.backbone.config.num_hidden_layers
    # The checkpointed model recomputes the layers from their inputs and runs the shared prefix
    # again instead of reading it from the cache: other float32 summation orders, the same
    # bound as the cached prefix against the full pass (test_lm_loss.py).
    torch.testing.assert_close(loss, ref_loss, rtol=LOSS_RTOL, atol=0)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=0, atol=grad_atol(ref_grads[name]), msg=name)
    assert any(float(g.abs().sum()) > 0 for g in grads.values())


def test_gradient_checkpointing_keeps_less_for_backward_and_nothing_changes_without_gradients(checkpoint_calls):
    def saved_bytes(model, embeds):
        storages = {}

        def pack(tensor):
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            hidden = model.model(inputs_embeds=embeds).last_hidden_state
        return sum(storages.values()), hidden

    plain, tok = tiny_backbone(seed=0)
    checkpointed, _ = tiny_backbone(seed=0, options={"gradient_checkpointing": True})
    assert not checkpointed.training  # the frozen backbone stays in eval mode (no dropout) and is still checkpointed
    embeds = plain.get_input_embeddings()(torch.arange(64)[None] + 100).detach().requires_grad_(True)
    plain_bytes, _ = saved_bytes(plain, embeds)
    ckpt_bytes, _ = saved_bytes(checkpointed, embeds)
    # Each layer keeps its input hidden state (and the rotary tables) instead of its ~20
    # intermediates (norms, q/k/v, attention, MLP).
    assert ckpt_bytes < plain_bytes / 3, (ckpt_bytes, plain_bytes)
    calls = len(checkpoint_calls)
    with torch.no_grad():  # generation and evaluation run the layers as they are
        ids = tok(["a short prompt"], return_tensors="pt")
        torch.testing.assert_close(checkpointed(**ids).logits, plain(**ids).logits, rtol=0, atol=0)
        out = checkpointed.generate(**ids, max_new_tokens=4, do_sample=False)
        assert torch.equal(out, plain.generate(**ids, max_new_tokens=4, do_sample=False))
    assert len(checkpoint_calls) == calls


def test_attention_implementations_agree(datamodule, batch):
    losses = {}
    for kernel in ("sdpa", "eager"):
        model = dep(datamodule, attn_implementation=kernel)
        assert model.backbone.config._attn_implementation == kernel
        losses[kernel] = model.losses(batch)["loss_gen"].detach()
    # The fused and the reference attention sum in other orders: float32 rounding only.
    torch.testing.assert_close(losses["eager"], losses["sdpa"], rtol=LOSS_RTOL, atol=0)


def test_an_unknown_attention_kernel_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"backbone_options.attn_implementation: 'flash' is not one of sdpa, "):
        BackboneOptions(attn_implementation="flash")


def test_downloads_need_both_switches(tmp_path, monkeypatch):
    from dep_lightning.models import backbone

    fetched = []
    model, tok = tiny_backbone(seed=0)
    folder = tmp_path / "fetched"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    monkeypatch.setattr(backbone, "_download", lambda hub_id: fetched.append(hub_id) or str(folder))

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="allow_download: true needs HF_HUB_OFFLINE=0"):
        load_backbone("some-org/some-model", options={"allow_download": True})
    with pytest.raises(FileNotFoundError, match="cached hub id .nothing is downloaded unless "
                                                "backbone_options.allow_download: true"):
        load_backbone("some-org/some-model-that-is-not-cached")
    assert fetched == []  # without allow_download nothing is fetched

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    loaded, _ = load_backbone("some-org/some-model", dtype="float32", options={"allow_download": True})
    assert fetched == ["some-org/some-model"]  # fetched once, then read locally
    assert torch.equal(loaded.model.embed_tokens.weight, model.model.embed_tokens.weight)
    load_backbone(str(folder), dtype="float32", options={"allow_download": True})
    assert fetched == ["some-org/some-model"]  # a local folder is never fetched


def test_options_are_saved_as_plain_hyperparameters(datamodule):
    model = dep(datamodule, gradient_checkpointing=True, attn_implementation="eager")
    assert model.hparams.backbone_options == {"attn_implementation": "eager", "gradient_checkpointing": True,
                                              "allow_download": False, "generation_backend": "auto",
                                              "vllm_gpu_memory": 0.4}
