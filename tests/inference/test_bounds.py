"""The rest of the importance-weighted family (VR-alpha, MIWAE, PIWAE, CIWAE): values and
gradients against the hand-written references, the identities that tie them to the ELBO and
IWAE, their order on a linear-Gaussian model, and their options."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro.infer import RenyiELBO, Trace_ELBO
from support import grads, make_data, make_vae, perturbed_two_layer

from pyro_vae import IWAE, make_estimator
from pyro_vae.checks import check_against_reference, reference_loss
from pyro_vae.checks.linear_gaussian import LinearGaussian
from pyro_vae.checks.reference_bounds import (
    reference_ciwae,
    reference_iwae,
    reference_miwae,
    reference_miwae_gradients,
    reference_piwae_gradients,
    reference_renyi,
)
from pyro_vae.checks.reference_check import _KeepSample
from pyro_vae.checks.reference_losses import _two_layer_noise
from pyro_vae.cli import main
from pyro_vae.inference import CIWAE, MIWAE, PIWAE, RenyiBound, sync_free
from pyro_vae.registry import OptionError
from pyro_vae.training import CompiledStep, ConfigError, TrainConfig

# each likelihood once, each prior and each guide at least once
CASES = [
    ("bernoulli", "vamp", "iaf"),
    ("continuous-bernoulli", "mixture", "diagonal"),
    ("gaussian", "normal", "diagonal"),
    ("gaussian-learned", "learned-normal", "diagonal"),
    ("laplace", "mixture", "diagonal"),
    ("beta", "normal", "diagonal"),
    ("poisson", "mixture", "low-rank"),
    ("negative-binomial", "vamp", "diagonal"),
    ("zero-inflated-negative-binomial", "learned-normal", "diagonal"),
]
BETAS = [0.0, 1.0, 4.0]

# name -> (estimator options, the estimator's name in the registry)
ESTIMATORS = {
    "renyi": ("renyi", dict(num_particles=4, alpha=0.6)),
    "miwae-standard": ("miwae", dict(num_particles=3, groups=2, grad="standard")),
    "miwae-stl": ("miwae", dict(num_particles=3, groups=2, grad="stl")),
    "miwae-dreg": ("miwae", dict(num_particles=3, groups=2, grad="dreg")),
    "piwae": ("piwae", dict(num_particles=3, groups=2)),
    "ciwae": ("ciwae", dict(num_particles=4, mix=0.3)),
}


def _estimator(case: str):
    name, options = ESTIMATORS[case]
    return make_estimator(name, **options)


def _reference(vae, elbo, x, eps, beta) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The hand-written per-image bound and the gradients of -sum of it, by the estimator's
    rule (eps: the noise of every particle, (M K, N, z_dim) or a pair for two layers)."""
    params = list(vae.parameters())
    if isinstance(elbo, RenyiBound):
        value = reference_renyi(vae, x, eps, beta, elbo.alpha)
    elif isinstance(elbo, CIWAE):
        value = reference_ciwae(vae, x, eps, beta, elbo.mix)
    elif isinstance(elbo, PIWAE):
        value = reference_iwae(vae, x, eps, beta)
        return value, reference_piwae_gradients(vae, x, eps, beta, elbo.groups)
    else:
        value = reference_miwae(vae, x, eps, beta, elbo.groups)
        return value, reference_miwae_gradients(vae, x, eps, beta, elbo.grad, elbo.groups)
    return value, grads(-value.sum(), params)


def _loss_and_sample(vae, elbo, x):
    """Pyro's loss and the z it sampled, (M K, N, z_dim) (a pair for two layers)."""
    keeper = _KeepSample(vae)  # a module's method: STL and DReG re-run two-layer guides
    return elbo.differentiable_loss(vae.model, keeper.guide, x), keeper.z


def _assert_equals_reference(vae, elbo, x, loss, eps, beta):
    want_value, want_grads = _reference(vae, elbo, x, eps, beta)
    torch.testing.assert_close(loss, -want_value.sum(), rtol=1e-9, atol=0)
    got = grads(loss, list(vae.parameters()))
    for (name, _), g, w in zip(vae.named_parameters(), got, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-7, atol=1e-9, msg=f"gradient of {name}")


@pytest.mark.parametrize("case", list(ESTIMATORS))
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("likelihood,prior,guide", CASES)
def test_bound_equals_the_reference(float64, likelihood, prior, guide, beta, case):
    vae = make_vae(likelihood, prior, beta, guide=guide)
    x = make_data(likelihood, n=3)
    elbo = _estimator(case)
    loss, z = _loss_and_sample(vae, elbo, x)
    eps = vae.q.noise(vae.encoder, x, z).detach()
    assert eps.shape == (elbo.num_particles, 3, 3)
    _assert_equals_reference(vae, elbo, x, loss, eps, beta)
    # the trainer's first-batch check reaches the same reference
    torch.testing.assert_close(reference_loss(vae, elbo, x, z), loss, rtol=1e-9, atol=0)


@pytest.fixture
def two_layer(float64):
    return perturbed_two_layer()


@pytest.mark.parametrize("case", list(ESTIMATORS))
@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_two_layer_bound_equals_the_reference(two_layer, case, beta):
    """Two latent sites: MIWAE's STL and DReG re-run the guide at constant parameters, with
    weights normalised within each group; PIWAE replays the model at both detached layers."""
    vae, x = two_layer
    vae.beta = beta
    elbo = _estimator(case)
    loss, z = _loss_and_sample(vae, elbo, x)
    eps = _two_layer_noise(vae, x, tuple(zi.detach() for zi in z))
    eps = tuple(e.detach() for e in eps)
    _assert_equals_reference(vae, elbo, x, loss, eps, beta)
    name = ESTIMATORS[case][0]
    assert TrainConfig(model="two-layer", estimator=name).estimator == name


def _seeded(elbo, model, guide, params, x, seed=3):
    pyro.set_rng_seed(seed)
    loss = elbo.differentiable_loss(model, guide, x)
    return loss, grads(loss, params)


def _assert_same(a, b, rtol=1e-10):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    torch.testing.assert_close(loss_a, loss_b, rtol=rtol, atol=0)
    for g, h in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(g, h, rtol=rtol, atol=1e-12)


def _vectorised_elbo(particles: int) -> Trace_ELBO:
    return Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)


@pytest.fixture
def vamp_vae(float64):
    """A VAE whose prior reads the encoder, at beta != 1: the hardest case for the split."""
    vae = make_vae("bernoulli", "vamp", beta=0.5)
    return vae, make_data("bernoulli", n=4), list(vae.parameters())


@pytest.mark.parametrize("grad", ["standard", "stl", "dreg"])
def test_miwae_with_one_group_is_iwae(vamp_vae, grad):
    vae, x, params = vamp_vae
    miwae = _seeded(MIWAE(num_particles=5, groups=1, grad=grad), vae.model, vae.guide, params, x)
    iwae = _seeded(IWAE(num_particles=5, grad=grad), vae.model, vae.guide, params, x)
    _assert_same(miwae, iwae)


def test_miwae_with_one_particle_per_group_is_the_elbo(vamp_vae):
    vae, x, params = vamp_vae
    miwae = _seeded(MIWAE(num_particles=1, groups=6), vae.model, vae.guide, params, x)
    elbo = _seeded(_vectorised_elbo(6), vae.model, vae.guide, params, x)
    _assert_same(miwae, elbo)


def test_ciwae_ends_are_the_elbo_and_iwae(vamp_vae):
    vae, x, params = vamp_vae
    ciwae_1 = _seeded(CIWAE(num_particles=5, mix=1.0), vae.model, vae.guide, params, x)
    _assert_same(ciwae_1, _seeded(_vectorised_elbo(5), vae.model, vae.guide, params, x))
    ciwae_0 = _seeded(CIWAE(num_particles=5, mix=0.0), vae.model, vae.guide, params, x)
    _assert_same(ciwae_0, _seeded(IWAE(num_particles=5), vae.model, vae.guide, params, x))


def test_renyi_alpha_zero_is_iwae(vamp_vae):
    vae, x, params = vamp_vae
    renyi = _seeded(RenyiBound(num_particles=5, alpha=0.0), vae.model, vae.guide, params, x)
    _assert_same(renyi, _seeded(IWAE(num_particles=5), vae.model, vae.guide, params, x))


@pytest.mark.parametrize("n", [1, 5])
@pytest.mark.parametrize("alpha", [0.3, 0.8])
def test_renyi_equals_pyros_renyi_elbo(float64, n, alpha):
    """Same seed: Pyro's RenyiELBO's loss and gradients. Pyro's bound is per datapoint only
    while every site is in plate("data") (it sums over the plates not all sites share), so a
    single datapoint always agrees; here every site is local, so five do too."""
    vae = make_vae("gaussian-learned", "learned-normal", beta=1.0)
    x = make_data("gaussian-learned", n=n)
    pyros = RenyiELBO(alpha=alpha, num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    pyro.set_rng_seed(5)
    pyros_loss = pyros.loss_and_grads(vae.model, vae.guide, x)
    pyros_grads = [p.grad.clone() for p in vae.parameters()]
    vae.zero_grad()
    pyro.set_rng_seed(5)
    loss = make_estimator("renyi", num_particles=4, alpha=alpha).loss_and_grads(
        vae.model, vae.guide, x
    )
    assert loss == pytest.approx(pyros_loss, rel=1e-12)
    for g, r in zip([p.grad for p in vae.parameters()], pyros_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("prior", ["learned-normal", "vamp"])
def test_piwae_gives_the_model_iwae_and_the_encoder_miwae(float64, prior):
    """Same noise: PIWAE(M, K)'s value is IWAE_{MK}'s; the decoder's, prior's and
    likelihood's gradients are IWAE_{MK}'s, the encoder's MIWAE(M, K)'s. With the VampPrior
    the encoder is the prior's too, and its gradient is neither (see PIWAE's docstring)."""
    vae = make_vae("gaussian-learned", prior, beta=1.0)
    x = make_data("gaussian-learned", n=4)
    params = list(vae.parameters())
    run = [vae.model, vae.guide, params, x]
    piwae_loss, piwae_grads = _seeded(PIWAE(num_particles=3, groups=2), *run)
    iwae_loss, iwae_grads = _seeded(IWAE(num_particles=6), *run)
    _, miwae_grads = _seeded(MIWAE(num_particles=3, groups=2), *run)
    torch.testing.assert_close(piwae_loss, iwae_loss, rtol=1e-12, atol=0)
    encoder = {id(p) for p in vae.guide_parameters()}
    for (name, p), g, i, m in zip(
        vae.named_parameters(), piwae_grads, iwae_grads, miwae_grads, strict=True
    ):
        if id(p) not in encoder:
            torch.testing.assert_close(g, i, rtol=1e-9, atol=1e-12, msg=name)
        elif prior != "vamp":
            torch.testing.assert_close(g, m, rtol=1e-9, atol=1e-12, msg=name)
            assert not torch.allclose(i, m), f"{name}: IWAE's and MIWAE's gradients coincide"
        else:
            assert not torch.allclose(g, m) and not torch.allclose(g, i), name


def _per_image(elbo, lg, x, seed) -> torch.Tensor:
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        return elbo.per_datapoint_bound(lg.model, lg.guide, x)


def test_the_bounds_order_on_a_linear_gaussian_model():
    """Same M K = 8 particles: ELBO <= MIWAE(2, 4) <= IWAE_8 for every image and draw (Jensen),
    CIWAE between the ELBO and IWAE_8, and below log p(x) on average over 20 draws."""
    lg = LinearGaussian().perturbed(0.4)
    x = lg.sample(50)
    log_px = lg.log_evidence(x).detach()
    runs = {
        "elbo": MIWAE(num_particles=1, groups=8),
        "miwae": MIWAE(num_particles=4, groups=2),
        "iwae": IWAE(num_particles=8),
        "ciwae": CIWAE(num_particles=8, mix=0.5),
    }
    draws = {k: torch.stack([_per_image(e, lg, x, s) for s in range(20)]) for k, e in runs.items()}
    pyro.set_rng_seed(0)  # the ELBO, independently: Pyro's, for the same particles
    trace = -_vectorised_elbo(8).loss(lg.model, lg.guide, x)
    assert trace == pytest.approx(float(draws["elbo"][0].sum()), rel=1e-12)
    gap = 1e-3  # each inequality is strict by more than this, on average
    assert (draws["elbo"] < draws["miwae"]).all() and (draws["miwae"] < draws["iwae"]).all()
    assert (draws["elbo"] < draws["ciwae"]).all() and (draws["ciwae"] < draws["iwae"]).all()
    means = {k: float(v.mean()) for k, v in draws.items()}
    assert means["elbo"] + gap < means["miwae"] < means["iwae"] - gap
    assert means["iwae"] < float(log_px.mean())


def test_renyi_decreases_in_alpha():
    """Same particles: VR-alpha is a power mean of the weights, IWAE_K at alpha = 0 falling
    to the ELBO as alpha -> 1."""
    lg = LinearGaussian().perturbed(0.4)
    x = lg.sample(30)
    alphas = [0.0, 0.2, 0.5, 0.8, 0.999]
    bounds = torch.stack([_per_image(RenyiBound(6, a), lg, x, 1) for a in alphas])
    assert (bounds[1:] < bounds[:-1]).all()
    iwae, elbo = _per_image(IWAE(6), lg, x, 1), _per_image(MIWAE(1, groups=6), lg, x, 1)
    torch.testing.assert_close(bounds[0], iwae, rtol=1e-12, atol=0)
    assert (elbo < bounds[-1]).all()
    assert float(((bounds[-1] - elbo) / (bounds[0] - elbo)).max()) < 0.01


@pytest.mark.parametrize("case", ["renyi", "miwae-dreg", "piwae", "ciwae"])
def test_compiled_step_equals_the_reference(float64, case):
    """The traced step (eager backend): loss and gradients at the z it drew."""
    vae = make_vae("bernoulli", "normal", 1.0)
    x = make_data("bernoulli", n=4)
    elbo = sync_free(_estimator(case))  # already sync-free: the estimator itself
    step = CompiledStep(vae, elbo, backend="eager")
    loss, z = step(x, 1.0)
    eps = vae.q.noise(vae.encoder, x, z).detach()
    want_value, want_grads = _reference(vae, elbo, x, eps, 1.0)
    torch.testing.assert_close(loss, -want_value.sum().detach(), rtol=1e-9, atol=0)
    for (name, p), w in zip(vae.named_parameters(), want_grads, strict=True):
        torch.testing.assert_close(p.grad, w, rtol=1e-7, atol=1e-9, msg=name)


@pytest.mark.parametrize("case", list(ESTIMATORS))
def test_the_first_batch_check_passes_in_float32(case):
    vae = make_vae("bernoulli", "mixture", 1.0)
    p, r = check_against_reference(vae, _estimator(case), make_data("bernoulli", n=8))
    assert p == pytest.approx(r, rel=1e-4)


def test_bad_options():
    for alpha in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"in \[0, 1\).*ELBO"):
            make_estimator("renyi", alpha=alpha)
    with pytest.raises(ValueError, match=r"mix must be in \[0, 1\]"):
        make_estimator("ciwae", mix=1.5)
    with pytest.raises(ValueError, match="groups must be >= 1"):
        make_estimator("miwae", groups=0)
    with pytest.raises(ValueError, match="stl, dreg"):
        make_estimator("miwae", grad="reinforce")
    with pytest.raises(OptionError, match="'grad' is an option of iwae, miwae"):
        make_estimator("piwae", grad="dreg")
    with pytest.raises(ConfigError, match=r"--alpha must be in \[0, 1\)"):
        TrainConfig(estimator="renyi", alpha=1.0)
    with pytest.raises(ConfigError, match="--groups does not apply .* miwae, piwae"):
        TrainConfig(estimator="iwae", groups=2)
    with pytest.raises(ConfigError, match="--ciwae-mix must be in"):
        TrainConfig(estimator="ciwae", ciwae_mix=-0.5)
    assert TrainConfig(estimator="ciwae", ciwae_mix=0.2).estimator_options() == {"mix": 0.2}


def test_the_command_line_refuses_an_option_of_another_bound(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--estimator", "miwae", "--ciwae-mix", "0.2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--ciwae-mix does not apply to --estimator miwae" in err and not out.exists()
