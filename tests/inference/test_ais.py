"""Annealed importance sampling and BDMC against the closed-form linear-Gaussian model (see
linear_gaussian.py), and the HMC transition against Gaussians whose moments are known."""

from __future__ import annotations

import inspect
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from support import imperfect_linear_gaussian

from pyro_vae import build_model, build_vae
from pyro_vae.checks.linear_gaussian import LinearGaussian
from pyro_vae.inference.ais import ais_log_likelihood
from pyro_vae.inference.annealing import AnnealingSettings, schedule
from pyro_vae.inference.bdmc import bdmc, simulate
from pyro_vae.inference.hmc import Point, adapt_step_size, hmc_transition, leapfrog
from pyro_vae.inference.latent_densities import LatentDensities, with_chains
from pyro_vae.inference.log_likelihood import log_likelihood

FAST = {"leapfrog_steps": 2, "step_size": 0.1}  # measured: the most accurate per second here


def test_exact_posterior_gives_log_px_for_any_number_of_steps():
    """With q0 = p(z|x), h = log p(x, z) - log q0(z) = log p(x) at every z: every weight is
    exact, in both directions, whatever the number of steps."""
    lg = LinearGaussian().exact()
    x = lg.sample(30)
    log_px = lg.log_evidence(x).detach()
    for num_steps in (1, 2, 7, 30):
        est = ais_log_likelihood(lg.model, lg.guide, x, num_steps, chains=4, **FAST)
        torch.testing.assert_close(est.per_image, log_px, rtol=0, atol=1e-8)
        torch.testing.assert_close(est.ess, torch.full_like(est.ess, 4.0))
    z, xs = simulate(lg.model, 30, x)
    both = bdmc(lg.model, lg.guide, xs, z, 7, chains=4, **FAST)
    exact = lg.log_evidence(xs).detach()
    torch.testing.assert_close(both.lower, exact, rtol=0, atol=1e-8)
    torch.testing.assert_close(both.upper, exact, rtol=0, atol=1e-8)


def test_ais_converges_from_the_guide_and_beats_importance_sampling():
    """A guide off the posterior: AIS's error shrinks with T, stays a lower bound, and ends
    within 0.05 nats, where importance sampling with as many evaluations of log p(x, z) is
    still nats below (measured: -3.8, -1.0, -0.03 nats; IS -3.3)."""
    lg, x, log_px = imperfect_linear_gaussian(0.3, 100)
    pyro.set_rng_seed(0)
    errors = []
    for num_steps in (10, 30, 200):
        est = ais_log_likelihood(lg.model, lg.guide, x, num_steps, chains=16, **FAST)
        errors.append(est.mean - float(log_px.mean()))
    assert errors[0] < -1 and errors[0] < errors[1] - 0.5 < errors[2] - 1
    assert -0.05 < errors[2] < 0.02
    evaluations = 16 * (1 + (200 - 1) * FAST["leapfrog_steps"])
    iwae = log_likelihood(lg.model, lg.guide, x, num_samples=evaluations)
    assert iwae.mean < float(log_px.mean()) - 1


def test_ais_from_the_prior_converges():
    lg, x, log_px = imperfect_linear_gaussian(0.3, 100)
    pyro.set_rng_seed(1)
    few = ais_log_likelihood(lg.model, lg.guide, x, 10, chains=16, initial="prior", **FAST)
    many = ais_log_likelihood(lg.model, lg.guide, x, 200, chains=16, initial="prior", **FAST)
    assert few.mean < float(log_px.mean()) - 0.3  # measured: -0.7 to -1.1 nats
    assert abs(many.mean - float(log_px.mean())) < 0.05


def test_weights_are_unbiased_for_px():
    """E[w] = p(x) for any T (Neal, 2001): few steps, many chains, a guide near the posterior;
    the mean of w / p(x) over every chain and image is 1 within its standard error."""
    lg = LinearGaussian(D=8, d=3).perturbed(0.1)
    x = lg.sample(50)
    pyro.set_rng_seed(2)
    est = ais_log_likelihood(lg.model, lg.guide, x, 4, chains=400, leapfrog_steps=2, step_size=0.3)
    ratio = (est.log_weights - lg.log_evidence(x).detach()).exp().flatten()
    assert abs(float(ratio.mean()) - 1) < 4 * float(ratio.std()) / len(ratio) ** 0.5


def test_bdmc_sandwiches_log_px_on_simulated_data():
    """lower <= log p(x) <= upper on average, far apart with 10 steps, within 0.05 nats of each
    other with 200 (measured gap: 11 and 0.03 nats)."""
    lg, x, _ = imperfect_linear_gaussian(0.3, 100)
    pyro.set_rng_seed(3)
    z, xs = simulate(lg.model, 100, x)
    exact = float(lg.log_evidence(xs).detach().mean())
    few = bdmc(lg.model, lg.guide, xs, z, 10, chains=16, **FAST)
    assert few.mean_lower < exact - 1 and few.mean_upper > exact + 1
    many = bdmc(lg.model, lg.guide, xs, z["z"], 200, chains=16, **FAST)
    assert many.mean_lower < exact + 0.02 and many.mean_upper > exact - 0.02
    assert -0.03 < many.mean_gap < 0.05
    assert many.forward.acceptance.min() > 0.3 and many.reverse_acceptance.min() > 0.3


def test_simulate_draws_from_the_model():
    lg = LinearGaussian(D=8, d=3)
    pyro.set_rng_seed(4)
    z, x = simulate(lg.model, 4000, lg.sample(3))
    assert z["z"].shape == (4000, 3) and x.shape == (4000, 8)
    residual = (x - z["z"] @ lg.W.T - lg.b).detach()
    assert float(residual.mean(0).abs().max()) < 0.05
    assert float(residual.std(0).sub(lg.s).abs().max()) < 0.05
    assert float(z["z"].std(0).sub(1).abs().max()) < 0.05
    vae = build_vae((1, 4, 4), z_dim=2, hidden=(8,))
    _, binary = simulate(vae.model, 10, torch.zeros(1, 16))
    assert binary.shape == (10, 16) and bool(((binary == 0) | (binary == 1)).all())


def _gaussian(mean: torch.Tensor, std: torch.Tensor):
    """The target N(mean, std^2) per image (mean, std: (N, d)) for z of shape (C, N, d)."""

    def target(z: dict[str, torch.Tensor]) -> Point:
        u = (z["z"] - mean) / std
        return Point(z, -0.5 * u.pow(2).sum(-1), {"z": -u / std})

    return target


def test_leapfrog_follows_the_hamiltonian_flow():
    """For a standard Gaussian the flow is a rotation: z(t) = z cos t + p sin t; leapfrog with
    step e is within O(e^2) of it."""
    target = _gaussian(torch.zeros(2, 3, dtype=torch.float64), torch.ones(2, 3))
    z0 = torch.randn(5, 2, 3, dtype=torch.float64)
    p0 = torch.randn(5, 2, 3, dtype=torch.float64)
    step = torch.full((2,), 0.01, dtype=torch.float64)
    end, p = leapfrog(target({"z": z0}), {"z": p0}, target, step, 100)
    torch.testing.assert_close(end.z["z"], z0 * math.cos(1) + p0 * math.sin(1), atol=1e-4, rtol=0)
    torch.testing.assert_close(p["z"], -z0 * math.sin(1) + p0 * math.cos(1), atol=1e-4, rtol=0)


def test_hmc_leaves_a_gaussian_invariant():
    """Started at exact samples, 20 transitions with steps large enough that a third of the
    proposals are rejected keep the moments of N(mean, std^2), per image."""
    pyro.set_rng_seed(5)
    mean = torch.tensor([[0.0, 3.0], [-2.0, 1.0], [5.0, 0.5]], dtype=torch.float64)
    std = torch.tensor([[1.0, 0.5], [0.2, 2.0], [0.1, 0.3]], dtype=torch.float64)
    target = _gaussian(mean, std)
    point = target({"z": mean + std * torch.randn(4000, 3, 2, dtype=torch.float64)})
    step = std.min(-1).values * 1.6
    accepted = []
    for _ in range(20):
        point, accept = hmc_transition(point, target, step, 3)
        accepted.append(accept.double().mean())
    assert 0.2 < float(torch.stack(accepted).mean()) < 0.9
    z = point.z["z"]
    assert float(((z.mean(0) - mean) / std).abs().max()) < 4 / 4000**0.5
    assert float((z.std(0) / std - 1).abs().max()) < 0.06


def test_step_size_adapts_towards_the_target_acceptance():
    torch.testing.assert_close(
        adapt_step_size(torch.tensor([0.1, 0.1]), torch.tensor([0.9, 0.5]), 0.65),
        torch.tensor([0.102, 0.098]),
    )
    assert float(adapt_step_size(torch.tensor([0.5]), torch.tensor([1.0]))) == 0.5  # clamped
    pyro.set_rng_seed(6)
    mean, std = torch.zeros(2, 4), torch.tensor([[0.05], [0.2]]).expand(2, 4)
    target = _gaussian(mean, std)
    point = target({"z": mean + std * torch.randn(200, 2, 4)})
    step = torch.tensor([0.5, 0.01])  # far too big for the first image, far too small for the
    # second
    rates = []
    for _ in range(300):
        point, accept = hmc_transition(point, target, step, 5)
        rates.append(accept.double().mean(0))
        step = adapt_step_size(step, rates[-1], 0.65)
    recent = torch.stack(rates[-100:]).mean(0)
    assert bool((recent > 0.5).all() and (recent < 0.8).all()), recent
    assert float(step[0]) < 0.15 and float(step[1]) > 0.05


def test_forward_run_records_its_adapted_step_sizes():
    """Exact posterior, tiny steps: every transition is accepted, so each image's step size
    grows by 2% per step, and the record holds the step used at each t."""
    lg = LinearGaussian().exact()
    x = lg.sample(5)
    est = ais_log_likelihood(lg.model, lg.guide, x, 10, chains=3, step_size=1e-3)
    want = 1e-3 * 1.02 ** torch.arange(10, dtype=torch.float64)
    torch.testing.assert_close(est.step_sizes, want[:, None].expand(10, 5))
    assert est.step_sizes.shape == (10, 5) and bool((est.acceptance == 1).all())


def _mean_and_se(values: torch.Tensor) -> tuple[float, float]:
    return float(values.mean()), float(values.var() / len(values)) ** 0.5


def test_chunking_keeps_the_estimate():
    """One chunk of 60 images or chunks of 7: the same estimates and bounds within noise."""
    lg = LinearGaussian(D=8, d=3).perturbed(0.1)
    z, x = simulate(lg.model, 60, lg.sample(1))
    log_px = lg.log_evidence(x).detach()
    pyro.set_rng_seed(7)
    runs = [
        bdmc(lg.model, lg.guide, x, z, 20, chains=8, max_particles=m, **FAST)
        for m in (8 * 60, 8 * 20)
    ]
    for bound in ("lower", "upper"):
        (a, se_a), (b, se_b) = (_mean_and_se(getattr(r, bound) - log_px) for r in runs)
        assert se_a < 0.15 and abs(a - b) < 4 * (se_a**2 + se_b**2) ** 0.5, (bound, a, b)
    # T = 1: the reverse run makes no transition, its bound is h at each image's own z
    one = bdmc(lg.model, lg.guide, x, z, 1, chains=2, max_particles=2 * 7)
    torch.testing.assert_close(one.upper, _log_ratio(lg, x, z["z"]), rtol=0, atol=1e-10)


def _log_ratio(lg: LinearGaussian, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """h(z) = log p(x, z) - log q(z|x) of the linear-Gaussian pair, written out."""
    with torch.no_grad():
        log_prior = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_lik = dist.Normal(z @ lg.W.T + lg.b, lg.s).log_prob(x).sum(-1)
        log_q = dist.Normal(x @ lg.A + lg.c, lg.log_scale.exp()).log_prob(z).sum(-1)
    return log_prior + log_lik - log_q


def test_shapes_several_latent_sites_and_no_parameter_grads():
    torch.manual_seed(0)
    vae = build_model(
        (1, 4, 4), model="two-layer", z_dim=3, z2_dim=2, hidden=(8,), upper_hidden=(4,)
    )
    x = torch.bernoulli(torch.rand(7, 16))
    est = ais_log_likelihood(vae.model, vae.guide, x, 6, chains=5, max_particles=15, **FAST)
    assert est.per_image.shape == (7,) and est.per_image.dtype == torch.float64
    assert est.log_weights.shape == (5, 7) and est.step_sizes.shape == (6, 7)
    assert est.ess.shape == est.acceptance.shape == (7,)
    assert bool(torch.isfinite(est.per_image).all()) and bool((est.ess >= 1 - 1e-9).all())
    assert (est.num_steps, est.chains, est.leapfrog_steps) == (6, 5, 2)
    z, xs = simulate(vae.model, 7, x)
    both = bdmc(vae.model, vae.guide, xs, z, 4, chains=3, initial="prior", **FAST)
    assert both.upper.shape == both.gap.shape == (7,) and bool(torch.isfinite(both.gap).all())
    assert all(p.grad is None for p in vae.parameters())
    lg, x, _ = imperfect_linear_gaussian(0.3, 5)
    ais_log_likelihood(lg.model, lg.guide, x, 5, chains=2)
    assert all(p.grad is None for p in lg.parameters())


def test_a_flow_guide_is_evaluated_through_its_inverse():
    """log q(z|x) of the iaf guide at given z (through the flow's inverse) is the density the
    guide gives its own draws (through the flow's cache); AIS runs with it."""
    torch.manual_seed(0)
    vae = build_vae((1, 4, 4), z_dim=2, hidden=(8,), guide="iaf")
    with torch.no_grad():
        for p in vae.q.parameters():
            p.add_(0.3 * torch.randn_like(p))  # a flow that is not the identity
    x = torch.bernoulli(torch.rand(4, 16))
    densities = LatentDensities(vae.model, vae.guide, x, 3)
    trace = poutine.trace(with_chains(vae.guide, 3)).get_trace(x)
    z = trace.nodes["z"]
    _, log_q = densities.log_densities({"z": z["value"].detach().clone()})
    torch.testing.assert_close(log_q, z["fn"].log_prob(z["value"]).detach(), rtol=0, atol=1e-5)
    assert bool(torch.isfinite(ais_log_likelihood(vae.model, vae.guide, x, 3).per_image).all())


def _model_with(site):
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", site(x.shape[0]))
            pyro.sample("x", dist.Normal(z[..., :1], 1.0).to_event(1), obs=x)

    return model


def _plate_at_dim_2(x):
    with pyro.plate("data", x.shape[0], dim=-2):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([x.shape[0], 2]))
        pyro.sample("x", dist.Normal(z[..., :1], 1.0), obs=x)


def _global_latent(x):
    w = pyro.sample("w", dist.Normal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(w, 1.0).expand([x.shape[0], 1]).to_event(1), obs=x)


def _no_latent(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(0.0, 1.0).expand([x.shape[0], 1]).to_event(1), obs=x)


@pytest.mark.parametrize(
    "model, message",
    [
        (_model_with(lambda n: dist.Bernoulli(0.5).expand([n, 2]).to_event(1)), "discrete"),
        (_model_with(lambda n: dist.Gamma(2.0, 1.0).expand([n, 2]).to_event(1)), "support"),
        (_plate_at_dim_2, r"batch shape \(3, 2\)"),
        (_global_latent, "'w'.*batch shape"),
        (_no_latent, "no latent"),
    ],
    ids=["discrete", "positive", "plate-dim", "global", "none"],
)
def test_latent_sites_annealing_cannot_handle_are_refused(model, message):
    x = torch.randn(3, 1)
    with pytest.raises(ValueError, match=message):
        ais_log_likelihood(model, lambda x: None, x, 2, initial="prior")


def test_guides_and_options_that_cannot_work_are_refused():
    lg, x, _ = imperfect_linear_gaussian(0.3, 3)
    autoencoder = build_vae((1, 4, 4), z_dim=2, hidden=(8,), autoencoder=True)
    with pytest.raises(ValueError, match="guide's latent site 'z'.*point mass"):
        ais_log_likelihood(autoencoder.model, autoencoder.guide, torch.zeros(2, 16), 2)
    with pytest.raises(ValueError, match=r"guide's latent sites \[\] are not the model's"):
        ais_log_likelihood(lg.model, lambda x: None, x, 2)
    for bad, message in [
        ({"initial": "posterior"}, "initial"),
        ({"schedule": "cosine"}, "schedule"),
        ({"chains": 0}, "chains"),
        ({"num_steps": 0}, "num_steps"),
        ({"target_accept": 1.0}, "target_accept"),
    ]:
        with pytest.raises(ValueError, match=message):
            ais_log_likelihood(lg.model, lg.guide, x, **{"num_steps": 2, **bad})
    with pytest.raises(ValueError, match="z_exact"):
        bdmc(lg.model, lg.guide, x, {"w": torch.zeros(3, 3)}, 2)


def test_schedules_run_from_0_to_1():
    for name in ("sigmoid", "linear"):
        betas = schedule(name, 50)
        assert betas.shape == (51,) and float(betas[0]) == 0 and float(betas[-1]) == 1
        assert bool((betas.diff() > 0).all())
    sigmoid = schedule("sigmoid", 50)
    torch.testing.assert_close(sigmoid + sigmoid.flip(0), torch.ones(51, dtype=torch.float64))
    assert float(sigmoid.diff()[0]) < 0.2 * float(sigmoid.diff()[25])  # slow at the ends


@pytest.mark.parametrize("estimator", [ais_log_likelihood, bdmc])
def test_one_settings_object_gives_every_option_and_default(estimator):
    """AIS and BDMC take exactly the settings' fields (less ``simulated``, which is the
    caller's), with the settings' defaults; a bad value is refused by the settings."""
    params = inspect.signature(estimator).parameters
    options = AnnealingSettings().run_options()
    assert {k: params[k].default for k in options} == options
    assert set(params) - set(options) <= {"model", "guide", "x", "z_exact", "progress"}
    with pytest.raises(ValueError, match="simulated must be >= 1, got 0"):
        AnnealingSettings(simulated=0)


def test_bdmc_s_forward_run_is_ais():
    """Forward AIS is one code path: BDMC's lower bound is AIS's estimate for the same seed
    and settings (one chunk; the reverse runs draw after it)."""
    lg, x, _ = imperfect_linear_gaussian(0.3, 6)
    settings = AnnealingSettings(num_steps=5, chains=3, leapfrog_steps=2, step_size=0.2)
    z, xs = simulate(lg.model, 6, x)
    pyro.set_rng_seed(3)
    ais = ais_log_likelihood(lg.model, lg.guide, xs, **settings.run_options())
    pyro.set_rng_seed(3)
    both = bdmc(lg.model, lg.guide, xs, z, **settings.run_options())
    torch.testing.assert_close(both.lower, ais.per_image, rtol=0, atol=0)
    torch.testing.assert_close(both.forward.step_sizes, ais.step_sizes, rtol=0, atol=0)
