"""beta on a model we have never seen: the latent sites of a rewritten model and guide weighted
by beta, in every estimator, checked against the loss written out by hand for the same z.

The hand-written objective with every latent site weighted by beta (Higgins et al., 2017)::

    ELBO_beta = sum_n [log p(x_n | z_n) + beta (log p(z_n) - log q(z_n | x_n))]
    IWAE_beta = sum_n log (1/K) sum_k exp[log p(x_n | z_nk)
                                           + beta (log p(z_nk) - log q(z_nk | x_n))]

and, for ``TraceMeanField_ELBO`` with an analytic KL, sum_n [log p(x_n | z_n) - beta KL_n]. The
z are the guide's own (kept as it returns them), so no random stream has to line up. Float64,
so that 1e-9 relative is a real test.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import kl_divergence
from user_parts_source import StudentTVAE

from pyro_vae import IWAE, VAE, RenyiBound, build_vae
from pyro_vae.checks import ReferenceMismatch, check_against_pyro
from pyro_vae.inference.sync_free import sync_free
from pyro_vae.model.latent_scale import LatentScaleMessenger, scale_latents
from pyro_vae.model.priors import Prior
from pyro_vae.training.compiled import CompiledStep

RTOL = 1e-9
Z_DIM, N, K, DF = 3, 6, 5, 4.0

pytestmark = pytest.mark.usefixtures("float64", "one_thread")


class StudentTPrior(Prior):
    """The user's prior, not registered: p(z) = prod_j StudentT(z_j; df, 0, 1)."""

    def __init__(self, z_dim: int, df: float = DF) -> None:
        super().__init__(z_dim)
        self.df = df

    def forward(self):
        zeros = torch.zeros(self.z_dim, dtype=torch.get_default_dtype())
        return dist.StudentT(self.df, zeros, 1.0).to_event(1)


class NormalVAE(VAE):
    """A rewritten model with a N(0, I) prior: the mean-field ELBO's analytic KL."""

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)
        return z


class CallsOurModel(VAE):
    """Rewrites model by calling ours inside: weighted once, by the outer handler."""

    def model(self, x):
        return super().model(x)


class CallsTheStudentT(StudentTVAE):
    """A rewritten model calling another rewritten model."""

    def model(self, x):
        return super().model(x)


class OwnGuide(StudentTVAE):
    """A rewritten guide that calls ours inside."""

    def guide(self, x):
        return super().guide(x)


def _make(cls: type[VAE] = StudentTVAE, beta: float = 4.0, prior: str = "student-t") -> VAE:
    """A small VAE of class ``cls`` (an MLP 784-16-3 both ways, Bernoulli pixels), its
    parameters moved off their initial values; ``prior``: its parts' p(z), for classes that
    take it from the parts."""
    torch.manual_seed(1)
    base = build_vae((1, 28, 28), z_dim=Z_DIM, hidden=(16,))
    with torch.no_grad():
        for p in base.parameters():
            p.add_(0.2 * torch.randn_like(p))
    pri = StudentTPrior(Z_DIM) if prior == "student-t" else base.prior
    vae = cls(base.encoder, base.decoder, base.likelihood, pri)
    vae.beta = beta
    return vae


def _data() -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    return torch.bernoulli(torch.rand(N, 784, generator=g, dtype=torch.float64), generator=g)


def _log_prior(vae: VAE, z: torch.Tensor) -> torch.Tensor:
    if isinstance(vae, StudentTVAE) or isinstance(vae.prior, StudentTPrior):
        return dist.StudentT(DF, 0.0, 1.0).log_prob(z).sum(-1)
    return dist.Normal(0.0, 1.0).log_prob(z).sum(-1)


def _terms(vae: VAE, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x | z) and log p(z) - log q(z | x), each of z's batch shape ((N,) or (K, N))."""
    loc, scale = vae.encoder(x)
    log_q = dist.Normal(loc, scale).log_prob(z).sum(-1)
    log_lik = dist.Bernoulli(logits=vae.decoder(z)).log_prob(x).sum(-1)
    return log_lik, _log_prior(vae, z) - log_q


def hand_elbo_loss(vae: VAE, x: torch.Tensor, z: torch.Tensor, beta: float) -> torch.Tensor:
    log_lik, log_ratio = _terms(vae, x, z)
    return -(log_lik + beta * log_ratio).sum()


def hand_iwae_loss(vae: VAE, x: torch.Tensor, z: torch.Tensor, beta: float) -> torch.Tensor:
    log_lik, log_ratio = _terms(vae, x, z)  # (K, N)
    log_w = log_lik + beta * log_ratio
    return -(torch.logsumexp(log_w, 0) - math.log(z.shape[0])).sum()


def hand_mean_field_loss(vae: VAE, x: torch.Tensor, z: torch.Tensor, beta: float):
    """With a N(0, I) prior: the analytic KL, weighted by beta."""
    loc, scale = vae.encoder(x)
    kl = kl_divergence(dist.Normal(loc, scale), dist.Normal(0.0, 1.0)).sum(-1)
    log_lik = dist.Bernoulli(logits=vae.decoder(z)).log_prob(x).sum(-1)
    return -(log_lik - beta * kl).sum()


def pyro_loss_and_z(vae: VAE, elbo, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The estimator's loss and the z the guide sampled for it."""
    kept = {}

    def guide(x):
        kept["z"] = vae.guide(x)
        return kept["z"]

    loss = elbo.differentiable_loss(vae.model, guide, x)
    return loss, kept["z"]


def assert_close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.dtype == torch.float64
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=RTOL, abs=0.0)


# --- beta = 4 on the Student-t model ------------------------------------------------------------


@pytest.mark.parametrize(
    "elbo,hand",
    [
        (Trace_ELBO(max_plate_nesting=1), hand_elbo_loss),
        (TraceMeanField_ELBO(max_plate_nesting=1), hand_elbo_loss),  # no analytic KL: sampled
        (IWAE(num_particles=K), hand_iwae_loss),
    ],
    ids=["trace", "mean-field", "iwae"],
)
def test_beta_4_weights_the_latent_sites_of_a_rewritten_student_t_model(elbo, hand):
    vae, x = _make(StudentTVAE, beta=4.0), _data()
    loss, z = pyro_loss_and_z(vae, elbo, x)
    assert z.shape == ((K, N, Z_DIM) if isinstance(elbo, IWAE) else (N, Z_DIM))
    assert_close(loss, hand(vae, x, z, 4.0))
    unweighted = hand(vae, x, z, 1.0).detach()
    assert float(loss.detach()) != pytest.approx(float(unweighted), rel=1e-3)  # beta matters


def test_beta_4_weights_the_analytic_kl_of_a_rewritten_model():
    """TraceMeanField_ELBO weights its analytic KL by the guide site's scale only."""
    vae, x = _make(NormalVAE, beta=4.0, prior="normal"), _data()
    loss, z = pyro_loss_and_z(vae, TraceMeanField_ELBO(max_plate_nesting=1), x)
    assert_close(loss, hand_mean_field_loss(vae, x, z, 4.0))


@pytest.mark.parametrize(
    "elbo,hand",
    [(Trace_ELBO(max_plate_nesting=1), hand_elbo_loss), (IWAE(num_particles=K), hand_iwae_loss)],
    ids=["trace", "iwae"],
)
def test_beta_0_masks_the_latent_sites(elbo, hand):
    """poutine.scale(0) raises; the handler masks, and the loss is the reconstruction alone."""
    vae, x = _make(StudentTVAE, beta=0.0), _data()
    loss, z = pyro_loss_and_z(vae, elbo, x)
    assert_close(loss, hand(vae, x, z, 0.0))
    log_lik, _ = _terms(vae, x, z)
    if z.dim() == 2:
        assert_close(loss, -log_lik.sum())


@pytest.mark.parametrize("cls", [CallsOurModel, CallsTheStudentT, OwnGuide])
def test_a_rewritten_program_calling_another_is_weighted_once(cls):
    prior = "normal" if cls is CallsOurModel else "student-t"
    vae, x = _make(cls, beta=4.0, prior=prior), _data()
    loss, z = pyro_loss_and_z(vae, Trace_ELBO(max_plate_nesting=1), x)
    assert_close(loss, hand_elbo_loss(vae, x, z, 4.0))  # not 16, nor 1
    trace = poutine.trace(vae.guide).get_trace(x)
    assert trace.nodes["z"]["scale"] == 4.0


@pytest.mark.parametrize("prior", ["normal", "student-t"])
def test_our_own_vae_weights_its_latent_site_itself(prior):
    """The package's VAE (a user's prior in it or not) keeps its own kl_weight path: the same
    loss at beta = 4 as the hand's, in every estimator."""
    vae, x = _make(VAE, beta=4.0, prior=prior), _data()
    assert VAE.weights_latents and "weighted" not in VAE.model.__qualname__
    for elbo, hand in [
        (Trace_ELBO(max_plate_nesting=1), hand_elbo_loss),
        (IWAE(num_particles=K), hand_iwae_loss),
    ]:
        pyro.set_rng_seed(0)
        loss, z = pyro_loss_and_z(vae, elbo, x)
        assert_close(loss, hand(vae, x, z, 4.0))
    if prior == "normal":
        loss, z = pyro_loss_and_z(vae, TraceMeanField_ELBO(max_plate_nesting=1), x)
        assert_close(loss, hand_mean_field_loss(vae, x, z, 4.0))


def test_a_tensor_beta_weights_the_latent_sites():
    """The compiled step's beta, a graph input. At 0 it multiplies (a mask cannot be a graph
    input); Pyro's validation refuses a zero tensor scale, and the trainer runs without it."""
    vae, x = _make(StudentTVAE, beta=1.0), _data()
    for beta in (4.0, 0.0):
        with vae.beta_tensor(torch.tensor(beta)), pyro.validation_enabled(False):
            loss, z = pyro_loss_and_z(vae, Trace_ELBO(max_plate_nesting=1), x)
        assert_close(loss, hand_elbo_loss(vae, x, z, beta))
    loss, z = pyro_loss_and_z(vae, Trace_ELBO(max_plate_nesting=1), x)  # the block is over
    assert_close(loss, hand_elbo_loss(vae, x, z, 1.0))


def test_the_compiled_step_weights_a_rewritten_model_by_its_tensor_beta():
    vae, x = _make(StudentTVAE, beta=1.0), _data()
    step = CompiledStep(vae, sync_free(Trace_ELBO(max_plate_nesting=1)), backend="eager")
    for beta in (4.0, 0.5):
        loss, z = step(x, beta)
        assert_close(loss, hand_elbo_loss(vae, x, z, beta))


# --- the handler itself -------------------------------------------------------------------------


def _program(x: torch.Tensor) -> None:
    with pyro.plate("data", 10, subsample_size=x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def test_scale_latents_weights_the_latent_sites_and_leaves_observed_ones_alone():
    x = torch.zeros(4)
    with scale_latents(4.0):
        trace = poutine.trace(_program).get_trace(x)
    plate = 10 / 4  # the subsample's own scale, on both sites
    assert trace.nodes["z"]["scale"] == pytest.approx(4.0 * plate)
    assert trace.nodes["x"]["scale"] == pytest.approx(plate)
    assert trace.nodes["data"]["scale"] == 1.0  # the subsample site is no latent
    with scale_latents(0.0):
        trace = poutine.trace(_program).get_trace(x)
    trace.compute_log_prob()
    assert trace.nodes["z"]["mask"] is False and trace.nodes["x"]["mask"] is None
    assert float(trace.nodes["z"]["log_prob_sum"]) == 0.0
    assert float(trace.nodes["x"]["log_prob_sum"]) != 0.0
    with scale_latents(torch.tensor(3.0)):
        trace = poutine.trace(_program).get_trace(x)
    assert float(trace.nodes["z"]["scale"]) == pytest.approx(3.0 * plate)
    assert trace.nodes["x"]["scale"] == pytest.approx(plate)
    assert not isinstance(scale_latents(1.0), LatentScaleMessenger)  # nothing to weight
    with pytest.raises(ValueError, match="beta must be >= 0"):
        scale_latents(-1.0)


# --- the first-batch check against Pyro's own objective ----------------------------------------


@pytest.mark.parametrize(
    "elbo",
    [
        Trace_ELBO(max_plate_nesting=1),
        TraceMeanField_ELBO(max_plate_nesting=1),
        IWAE(num_particles=5),
        RenyiBound(num_particles=5, alpha=0.5),
    ],
    ids=["trace", "mean-field", "iwae", "renyi"],
)
@pytest.mark.parametrize("beta", [1.0, 4.0])
def test_the_student_t_models_step_is_pyros_objective(elbo, beta):
    vae, x = _make(StudentTVAE, beta=beta), _data()
    record = check_against_pyro(vae, elbo, sync_free(elbo), x)
    assert record["check"] == "pyro" and record["batch_size"] == N
    assert record["step_loss"] == pytest.approx(record["pyro_loss"], rel=RTOL, abs=0.0)
    assert "Pyro" in record["against"]


def test_the_compiled_step_is_checked_against_pyro_too():
    vae, x = _make(StudentTVAE, beta=4.0), _data()
    elbo = Trace_ELBO(max_plate_nesting=1)
    step = CompiledStep(vae, sync_free(elbo), backend="eager")
    record = check_against_pyro(vae, elbo, sync_free(elbo), x, step=step)
    assert record["compared"] == "the compiled step"

    def off_by_one_percent(x, beta):
        loss, z = step(x, beta)
        return loss * 1.01, z

    with pytest.raises(ReferenceMismatch, match="the compiled step gives"):
        check_against_pyro(vae, elbo, sync_free(elbo), x, step=off_by_one_percent)


@pytest.mark.parametrize(
    "elbo,step_elbo",
    [
        (Trace_ELBO(max_plate_nesting=1), IWAE(num_particles=5)),
        (IWAE(num_particles=5), RenyiBound(num_particles=5, alpha=0.5)),
        (TraceMeanField_ELBO(max_plate_nesting=1), Trace_ELBO(num_particles=2)),
    ],
    ids=["iwae-for-trace", "renyi-for-iwae", "two-particles-for-one"],
)
def test_a_step_that_is_another_objective_is_a_mismatch(elbo, step_elbo):
    vae, x = _make(StudentTVAE, beta=4.0), _data()
    with pytest.raises(ReferenceMismatch, match="does not optimise the objective"):
        check_against_pyro(vae, elbo, step_elbo, x)
