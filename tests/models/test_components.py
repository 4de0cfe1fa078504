import math

import pytest
import torch
from torch import nn

from dep_lightning.models.components import (
    Autoencoder,
    IdentityRefiner,
    Projector,
    SparseAutoencoder,
    init_weights,
    splice_soft_prompts,
)
from tests.tolerances import F32_EPS


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("cls", [SparseAutoencoder, Autoencoder])
def test_autoencoder_shapes_and_range(cls):
    ae = cls(16, 8)
    e = torch.randn(3, 5, 16)
    z, e_hat = ae(e)
    assert z.shape == (3, 5, 8) and e_hat.shape == (3, 5, 16)
    assert ae.d_latent == 8
    # sigmoid latent: the Bernoulli KL's rho_hat is always inside (0, 1)
    assert bool(((z > 0) & (z < 1)).all())


def test_projector_shapes():
    assert Projector(8, 12)(torch.randn(4, 8)).shape == (4, 12)
    proj = Projector(8, 12, hidden=5)
    assert proj.net[0].out_features == 5 and isinstance(proj.net[1], nn.GELU)


def _kl(rho, q):
    return rho * math.log(rho / q) + (1 - rho) * math.log((1 - rho) / (1 - q))


def test_sparsity_loss_matches_hand_computation():
    sae = SparseAutoencoder(4, 3, rho=0.05)
    z = torch.tensor([[0.1, 0.5, 0.02], [0.3, 0.1, 0.04]])
    means = [0.2, 0.3, 0.03]
    expected = sum(_kl(0.05, q) for q in means) / 3
    # float32 against float64 math: ~10 roundings of <= eps/2 (inputs, means, ratios, logs,
    # sums), amplified <= 3x where the two KL terms cancel: ~15 eps (measured 1.7); 32 allowed.
    assert sae.sparsity_loss(z).item() == pytest.approx(expected, rel=32 * F32_EPS)


def test_sparsity_loss_mask_and_empty():
    sae = SparseAutoencoder(4, 2, rho=0.1)
    z = torch.tensor([[[0.2, 0.4], [0.9, 0.9]]])  # (1, 2, 2); second row is padding
    mask = torch.tensor([[True, False]])
    expected = (_kl(0.1, 0.2) + _kl(0.1, 0.4)) / 2
    assert sae.sparsity_loss(z, mask).item() == pytest.approx(expected, rel=32 * F32_EPS)  # as above (measured 2.7 eps)
    assert sae.sparsity_loss(z, torch.zeros(1, 2, dtype=torch.bool)).item() == 0.0
    with pytest.raises(ValueError, match="mask shape"):
        sae.sparsity_loss(z, torch.ones(2, dtype=torch.bool))


def test_sparsity_gradient_nonzero_below_target():
    # The reference's GELU + clamp gave zero gradient to units with a mean below 0 / the clamp.
    # With sigmoid every unit, including those far below rho, is pushed towards rho.
    sae = SparseAutoencoder(6, 4, rho=0.05)
    with torch.no_grad():
        sae.encoder.bias.copy_(torch.tensor([-12.0, -8.0, -4.0, 0.0]))  # means ~6e-6 .. 0.5
    e = torch.randn(32, 6) * 0.1
    z, _ = sae(e)
    assert bool((z.mean(0)[:3] < 0.05).all())
    sae.sparsity_loss(z).backward()
    grad = sae.encoder.bias.grad
    assert bool((grad != 0).all())
    assert bool((grad[:3] < 0).all())  # below target: descent raises the mean
    assert grad[3] > 0  # above target: descent lowers it


def test_ae_sparsity_is_zero_and_reconstruction_is_smooth_l1():
    ae = Autoencoder(8, 4)
    e = torch.randn(5, 8)
    z, e_hat = ae(e)
    assert ae.sparsity_loss(z).item() == 0.0
    expected = nn.functional.smooth_l1_loss(e_hat, e)
    # reconstruction_loss is this very call on the same float32 tensors: bit-identical.
    assert ae.reconstruction_loss(e, e_hat).item() == expected.item()
    mask = torch.tensor([True, False, True, True, False])
    masked = nn.functional.smooth_l1_loss(e_hat[mask], e[mask])
    assert ae.reconstruction_loss(e, e_hat, mask).item() == masked.item()  # the same rows selected, then the same call


def test_identity_refiner():
    ident = IdentityRefiner(7)
    assert ident.d_latent == 7 and list(ident.parameters()) == []
    e = torch.randn(2, 3, 7)
    z, e_hat = ident(e)
    assert z is e and e_hat is e
    assert ident.reconstruction_loss(e, e_hat).item() == 0.0
    assert ident.sparsity_loss(z).item() == 0.0


@pytest.mark.parametrize(
    "module", [SparseAutoencoder(20, 10), Autoencoder(20, 10), Projector(10, 30, hidden=15)], ids=str
)
def test_xavier_init(module):
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 2
    for layer in linears:
        fan_out, fan_in = layer.weight.shape
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert layer.weight.abs().max().item() <= bound
        assert layer.weight.abs().max().item() > 0.5 * bound  # really spread, not tiny
        assert bool((layer.bias == 0).all())


def test_init_weights_returns_module():
    lin = nn.Linear(3, 3)
    assert init_weights(lin) is lin and bool((lin.bias == 0).all())


def test_splice_places_vectors_and_keeps_rest():
    embeds = torch.randn(2, 6, 4, dtype=torch.bfloat16)
    before = embeds.clone()
    positions = torch.tensor([[0, 1], [1, 5], [0, 3]])
    vectors = torch.randn(3, 4, requires_grad=True)  # fp32 projector output
    out = splice_soft_prompts(embeds, positions, vectors)
    assert out.dtype == torch.bfloat16 and out.shape == embeds.shape
    assert torch.equal(embeds, before)  # input untouched
    for k, (b, t) in enumerate(positions.tolist()):
        assert torch.equal(out[b, t], vectors[k].detach().to(torch.bfloat16))
    keep = torch.ones(2, 6, dtype=torch.bool)
    keep[positions[:, 0], positions[:, 1]] = False
    assert torch.equal(out[keep], before[keep])  # bit-identical elsewhere


def test_splice_gradients_flow_to_vectors_only():
    frozen = nn.Embedding(10, 4).requires_grad_(False)
    embeds = frozen(torch.tensor([[1, 2, 3], [4, 5, 6]]))
    vectors = torch.randn(2, 4, requires_grad=True)
    out = splice_soft_prompts(embeds, torch.tensor([[0, 0], [1, 2]]), vectors)
    weights = torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape)
    (out * weights).sum().backward()
    assert torch.equal(vectors.grad[0], weights[0, 0]) and torch.equal(vectors.grad[1], weights[1, 2])
    assert frozen.weight.grad is None

    # If the embeddings do require grad, the replaced slots receive none.
    leaf = torch.randn(2, 3, 4, requires_grad=True)
    splice_soft_prompts(leaf, torch.tensor([[1, 1]]), torch.randn(1, 4)).sum().backward()
    assert leaf.grad[1, 1].abs().sum() == 0 and leaf.grad[0].eq(1).all()


def test_splice_empty_positions_returns_copy():
    embeds = torch.randn(1, 2, 3)
    out = splice_soft_prompts(embeds, torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, 3))
    assert out is not embeds and torch.equal(out, embeds)


@pytest.mark.parametrize(
    "positions, vectors, error, match",
    [
        (torch.tensor([[0, 3]]), torch.zeros(1, 4), IndexError, "outside"),
        (torch.tensor([[2, 0]]), torch.zeros(1, 4), IndexError, "outside"),
        (torch.tensor([[0, -1]]), torch.zeros(1, 4), IndexError, "outside"),
        (torch.tensor([[0, 1], [0, 1]]), torch.zeros(2, 4), ValueError, "duplicate"),
        (torch.tensor([0, 1]), torch.zeros(1, 4), ValueError, r"\(N, 2\)"),
        (torch.tensor([[0.0, 1.0]]), torch.zeros(1, 4), TypeError, "integer"),
        (torch.tensor([[0, 1]]), torch.zeros(1, 5), ValueError, "vectors must be"),
        (torch.tensor([[0, 1]]), torch.zeros(2, 4), ValueError, "vectors must be"),
    ],
)
def test_splice_validation(positions, vectors, error, match):
    with pytest.raises(error, match=match):
        splice_soft_prompts(torch.zeros(2, 3, 4), positions, vectors)


def test_splice_rejects_2d_embeds():
    with pytest.raises(ValueError, match="batch, seq, hidden"):
        splice_soft_prompts(torch.zeros(3, 4), torch.tensor([[0, 0]]), torch.zeros(1, 4))


@pytest.mark.parametrize("cls", [SparseAutoencoder, Autoencoder])
def test_reconstruction_loss_falls(cls):
    model = cls(32, 16)
    e = nn.functional.normalize(torch.randn(64, 32), dim=-1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(50):
        z, e_hat = model(e)
        loss = 100 * (model.reconstruction_loss(e, e_hat) + 1e-3 * model.sparsity_loss(z))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(model.reconstruction_loss(e, e_hat).item())
    assert losses[-1] < 0.5 * losses[0]
