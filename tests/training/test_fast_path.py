"""The fast training path: sync-free ELBOs, the compiled step, fused Adam — each checked
against Pyro's own ELBOs and the hand-written reference, like the plain path."""

from __future__ import annotations

import dataclasses
import itertools

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from support import assert_step_trains, grads, make_data, make_vae

from pyro_vae import make_estimator
from pyro_vae.checks import check_against_reference, reference_loss
from pyro_vae.inference import MeanFieldELBO, MonteCarloELBO, sync_free
from pyro_vae.training import CompiledStep, make_optimizer


@pytest.mark.parametrize(
    "likelihood,prior,beta",
    list(itertools.product(["bernoulli", "gaussian-learned"], ["normal", "mixture"], [0.0, 2.0])),
)
@pytest.mark.parametrize(
    "ours,pyros", [(MonteCarloELBO, Trace_ELBO), (MeanFieldELBO, TraceMeanField_ELBO)]
)
def test_sync_free_elbos_equal_pyros(float64, likelihood, prior, beta, ours, pyros):
    vae = make_vae(likelihood, prior, beta)
    x = make_data(likelihood)
    pyro.set_rng_seed(7)
    a = ours().differentiable_loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(7)
    b = pyros(max_plate_nesting=1).differentiable_loss(vae.model, vae.guide, x)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for g, h in zip(
        grads(a, list(vae.parameters())), grads(b, list(vae.parameters())), strict=True
    ):
        torch.testing.assert_close(g, h, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", [MonteCarloELBO, MeanFieldELBO])
def test_vectorised_particles_average_the_reference(float64, cls):
    vae = make_vae("bernoulli", "learned-normal", 0.5)
    x = make_data("bernoulli")
    kept = {}

    def guide(x):
        kept["z"] = vae.guide(x)
        return kept["z"]

    elbo = cls(num_particles=4)
    loss = elbo.differentiable_loss(vae.model, guide, x)
    assert kept["z"].shape == (4, x.shape[0], 3)
    torch.testing.assert_close(loss, reference_loss(vae, elbo, x, kept["z"]), rtol=1e-10, atol=0)


def test_sync_free_maps_pyros_classes():
    assert isinstance(sync_free(make_estimator("trace")), MonteCarloELBO)
    assert isinstance(sync_free(make_estimator("mean-field")), MeanFieldELBO)
    iwae = make_estimator("iwae", 5, "dreg")
    assert sync_free(iwae) is iwae


@pytest.mark.parametrize("name", ["trace", "mean-field"])
def test_sync_free_keeps_the_particle_count(float64, name):
    """The trainer's twin of an 8-particle ELBO draws 8 particles and averages their bound."""
    twin = sync_free(make_estimator(name, num_particles=8))
    assert twin.num_particles == 8
    vae = make_vae("bernoulli", "learned-normal", 0.5)
    x = make_data("bernoulli")
    kept = {}

    def guide(x):
        kept["z"] = vae.guide(x)
        return kept["z"]

    loss = twin.differentiable_loss(vae.model, guide, x)
    assert kept["z"].shape == (8, x.shape[0], 3)
    torch.testing.assert_close(loss, reference_loss(vae, twin, x, kept["z"]), rtol=1e-10, atol=0)


CASES = [
    ("mean-field", 1, "standard", {"num_particles": 1}),
    ("trace", 1, "standard", {"num_particles": 1}),
    ("iwae", 4, "dreg", {"num_particles": 4, "grad": "dreg"}),
    ("iwae", 4, "stl", {"num_particles": 4, "grad": "stl"}),
    ("free-bits", 1, "standard", {"free_bits": 0.2}),
]


@pytest.mark.parametrize("estimator,particles,grad,options", CASES)
def test_compiled_step_equals_the_reference(float64, estimator, particles, grad, options):
    """The traced graph's loss and gradients at the z it drew equal the hand-written ones."""
    vae = make_vae("bernoulli", "normal", 1.0)
    x = make_data("bernoulli")
    elbo = sync_free(make_estimator(estimator, **options))
    step = CompiledStep(vae, elbo, backend="eager")
    for beta in (1.0, 0.3, 0.0):  # beta is an input: one graph for every value
        vae.beta = beta
        loss, z = step(x, beta)
        ref = reference_loss(vae, elbo, x, z)
        torch.testing.assert_close(loss, ref.detach(), rtol=1e-9, atol=1e-9)
        if estimator in ("mean-field", "trace", "free-bits") or grad == "standard":
            got = [p.grad for p in vae.parameters()]
            for g, r in zip(got, grads(ref, list(vae.parameters())), strict=True):
                torch.testing.assert_close(g, r, rtol=1e-7, atol=1e-9)
    assert len(step._graphs) == 1


def test_compiled_dreg_gradients_equal_the_reference(float64):
    from pyro_vae.checks.reference_losses import reference_iwae_gradients

    vae = make_vae("bernoulli", "normal", 1.0)
    x = make_data("bernoulli")
    step = CompiledStep(vae, make_estimator("iwae", 4, "dreg"), backend="eager")
    _, z = step(x, 1.0)
    loc, scale = vae.encoder(x)
    eps = ((z - loc) / scale).detach()
    want = reference_iwae_gradients(vae, x, eps, 1.0, "dreg")
    for (name, p), w in zip(vae.named_parameters(), want, strict=True):
        torch.testing.assert_close(p.grad, w, rtol=1e-7, atol=1e-9, msg=name)


def test_inductor_step_matches_the_reference_draws_the_eager_noise_and_trains():
    """The real thing: TorchInductor-compiled, float32, checked like the eager loss. Its noise
    comes from torch's generator through the eager kernels: for the same seed, the z of the
    eager guide."""
    torch.manual_seed(0)
    vae = make_vae("bernoulli", "normal", 1.0).float()
    x = torch.bernoulli(torch.rand(64, 784))
    elbo = sync_free(make_estimator("mean-field"))
    step = CompiledStep(vae, elbo, backend="inductor")
    p, r = check_against_reference(vae, elbo, x, step=step)
    assert p == pytest.approx(r, rel=1e-4)
    pyro.set_rng_seed(1)
    _, z = step(x, 1.0)
    pyro.set_rng_seed(1)
    with torch.no_grad():
        z_eager = vae.guide(x)
    torch.testing.assert_close(z, z_eager, rtol=1e-5, atol=1e-6)
    assert_step_trains(step, x)


def test_inductor_step_adds_the_biases_in_its_fused_loops():
    """No ``addmm`` runs in the compiled step (each would first copy its bias into the
    product's output): Inductor fuses every bias add back into one unless the split is made
    after its own rewrites (SplitAddmm)."""
    torch.manual_seed(0)
    vae = make_vae("bernoulli", "normal", 1.0).float()
    x = torch.bernoulli(torch.rand(64, 784))
    step = CompiledStep(vae, sync_free(make_estimator("mean-field")), backend="inductor")
    step(x, 1.0)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step(x, 1.0)
    ran = [e.name for e in prof.events()]
    assert ran.count("aten::mm") >= 4  # the products run, as plain mm
    assert "aten::addmm" not in ran


def test_fused_adam_on_cpu():
    optimizer = make_optimizer([torch.nn.Parameter(torch.zeros(3))], 1e-3)
    assert optimizer.defaults.get("fused") or optimizer.defaults.get("foreach")


def test_bf16_autocast_loss_agrees_with_fp32():
    """Stated tolerance: 1% of the loss (measured 0.015%) for the same noise."""
    vae = make_vae("bernoulli", "normal", 1.0).float()
    x = torch.bernoulli(torch.rand(64, 784, generator=torch.Generator().manual_seed(0)))
    elbo = sync_free(make_estimator("mean-field"))
    pyro.set_rng_seed(1)
    full = elbo.differentiable_loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = elbo.differentiable_loss(vae.model, vae.guide, x)
    assert float(half.detach()) == pytest.approx(float(full.detach()), rel=1e-2)


def test_bf16_training_runs(tmp_path, mnist_sample):
    from pyro_vae import TrainConfig, train
    from pyro_vae.data import ImageData

    d = mnist_sample
    data = ImageData(d.train_x[:512], d.train_y[:512], d.test_x[:128], d.test_y[:128])
    result = train(
        TrainConfig(
            epochs=2, hidden=(64,), z_dim=4, precision="bf16", out=str(tmp_path), progress=False
        ),
        data,
    )
    rows = result.metrics
    assert rows[-1]["test_neg_elbo"] < rows[0]["test_neg_elbo"]


def test_cuda_graphs_are_refused_where_they_cannot_apply(tmp_path, mnist_sample):
    from pyro_vae import TrainConfig, train
    from pyro_vae.training import ConfigError

    with pytest.raises(ConfigError, match="applies only with --compile"):
        TrainConfig(cuda_graphs=True)
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        TrainConfig(cuda_graphs=True, compile=True, device="cpu")
    vae = make_vae("bernoulli", "normal", 1.0).float()
    elbo = sync_free(make_estimator("mean-field"))
    with pytest.raises(ValueError, match="inductor"):
        CompiledStep(vae, elbo, backend="eager", cuda_graphs=True)
    with pytest.raises(ValueError, match="CUDA tensors"):
        CompiledStep(vae, elbo, cuda_graphs=True)(torch.zeros(4, 784), 1.0)
    if not torch.cuda.is_available():  # --device auto lands on the CPU here
        with pytest.raises(ConfigError, match="this run is on cpu"):
            train(TrainConfig(compile=True, cuda_graphs=True, out=str(tmp_path)), mnist_sample)


def test_an_unused_parameter_gets_no_gradient_from_the_compiled_step():
    """As after ``backward``: ``.grad`` stays None, so Adam leaves the parameter alone."""
    vae = make_vae("bernoulli", "normal", 1.0)
    vae.unused = torch.nn.Parameter(torch.ones(3))
    step = CompiledStep(vae, sync_free(make_estimator("trace")), backend="eager")
    step(make_data("bernoulli"), 1.0)
    assert vae.unused.grad is None
    assert all(p.grad is not None for n, p in vae.named_parameters() if n != "unused")


def test_compiled_training_resumes_bit_for_bit(tmp_path, mnist_sample):
    """The trainer's --compile path on the CPU (TorchInductor): the reference check passes
    and leaves no trace, Adam counts every step, a run stopped after one epoch and resumed
    ends where an unbroken run ends, bit for bit, and the eager run with the same seed gives
    the same numbers."""
    from pyro_vae import TrainConfig, train
    from pyro_vae.data import ImageData
    from pyro_vae.training import Trainer, assemble
    from pyro_vae.training import run_dir as runs

    d = mnist_sample
    data = ImageData(d.train_x[:512], d.train_y[:512], d.test_x[:128], d.test_y[:128])

    def config(out, epochs):
        return TrainConfig(
            epochs=epochs, hidden=(32,), z_dim=4, compile=True, out=str(tmp_path / out),
            progress=False,
        )  # fmt: skip

    trainer = Trainer(assemble(config("fresh", 1), data))
    check = trainer.reference_check
    assert check["pyro_loss"] == pytest.approx(check["reference_loss"], rel=1e-4)
    assert not trainer.parts.optimizer.state  # the check took no optimizer step
    straight = train(config("straight", 2), data)
    state = runs.load_checkpoint(tmp_path / "straight" / runs.CHECKPOINT)
    assert {float(s["step"]) for s in state["optimizer"]["state"].values()} == {8.0}
    assert straight.metrics[-1]["test_neg_elbo"] < straight.metrics[0]["test_neg_elbo"]
    train(config("resumed", 1), data)
    resumed = train(config("resumed", 2), data, resume=True)
    for (name, a), b in zip(straight.vae.named_parameters(), resumed.vae.parameters(), strict=True):
        assert torch.equal(a, b), name
    # it draws the eager run's noise: the same seed gives the eager run's numbers, up to the
    # rounding of the fused loops
    eager = train(dataclasses.replace(config("eager", 2), compile=False), data)
    for mine, theirs in zip(straight.metrics, eager.metrics, strict=True):
        for key in ("train_loss", "test_neg_elbo", "test_rate"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-5), key
