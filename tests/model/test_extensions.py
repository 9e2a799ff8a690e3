"""The families beyond the core VAE, end to end: count likelihoods with an observed library size,
the synthetic count data and its true likelihood, VampPrior and Beta/Laplace training from the
command line, and the two-stochastic-layer VAE against its hand-written reference."""

from __future__ import annotations

import json
import math

import pytest
import torch
from support import grads, loss_and_eps, make_data

from pyro_vae import build_model, build_vae, evaluate_elbo, load_run, make_estimator
from pyro_vae.checks import pyro_and_reference_loss
from pyro_vae.checks.reference_check import _KeepSample
from pyro_vae.checks.reference_losses import (
    _two_layer_noise,
    reference_iwae,
    reference_iwae_gradients,
)
from pyro_vae.cli import main
from pyro_vae.data import CountTruth, ImageData, count_data, with_context
from pyro_vae.studies.count_recovery import affine_r2, count_recovery
from pyro_vae.training import ConfigError, TrainConfig
from pyro_vae.training import run_dir as runs

COUNTS = ["poisson", "negative-binomial", "zero-inflated-negative-binomial"]


def _count_vae(likelihood: str, features: int = 12):
    torch.manual_seed(3)
    vae = build_vae((features,), likelihood=likelihood, library="observed", z_dim=2, hidden=(8,))
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return vae


def _counts(n: int = 5, features: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(4)
    x = torch.poisson(torch.rand(n, features, generator=g, dtype=torch.float64) * 20, g)
    x[:, 0] += 1
    return x


@pytest.mark.parametrize("likelihood", COUNTS)
@pytest.mark.parametrize("estimator", ["trace", "mean-field"])
def test_observed_library_size_matches_the_reference(float64, likelihood, estimator):
    vae = _count_vae(likelihood)
    pyro_loss, ref_loss = pyro_and_reference_loss(vae, make_estimator(estimator), _counts())
    torch.testing.assert_close(pyro_loss, ref_loss, rtol=1e-9, atol=0)


@pytest.mark.parametrize("likelihood", COUNTS)
def test_observed_library_size_iwae_dreg_gradients_match_the_reference(float64, likelihood):
    vae = _count_vae(likelihood)
    x = _counts()
    kept = {}

    def guide(x):
        kept["z"] = vae.guide(x)
        return kept["z"]

    elbo = make_estimator("iwae", num_particles=4, grad="dreg")
    loss = elbo.differentiable_loss(vae.model, guide, x)
    loc, scale = vae.encoder(x)
    eps = ((kept["z"] - loc) / scale).detach()
    got = torch.autograd.grad(loss, list(vae.parameters()), allow_unused=True)
    want = reference_iwae_gradients(vae, x, eps, 1.0, "dreg")
    for (name, p), g, w in zip(vae.named_parameters(), got, want, strict=True):
        g = torch.zeros_like(p) if g is None else g
        torch.testing.assert_close(g, w, rtol=1e-7, atol=1e-9, msg=name)


def test_count_encoders_read_log_counts():
    vae = _count_vae("poisson")
    x = _counts().float()
    torch.testing.assert_close(vae.encoder(x)[0], vae.encoder.encoder(torch.log1p(x))[0])


@pytest.mark.parametrize("likelihood", COUNTS)
def test_reconstructions_of_counts_keep_each_rows_library_size(float64, likelihood):
    """vae.reconstruct(x) is E[x | z = loc(x)] at the row's own library size l = sum_i x_i:
    the means sum to l (times 1 - pi under zero inflation), not to 1 as proportions would."""
    vae = _count_vae(likelihood).double()
    x = _counts()
    loc, _ = vae.encoder(x)
    out = vae.decoder(loc)
    expected = x.sum(-1, keepdim=True) * torch.softmax(out[:, :12], -1)
    if likelihood == "zero-inflated-negative-binomial":
        expected = expected * torch.sigmoid(-out[:, 12:])
    recon = vae.reconstruct(x)
    torch.testing.assert_close(recon, expected, rtol=1e-12, atol=0)
    if likelihood != "zero-inflated-negative-binomial":
        torch.testing.assert_close(recon.sum(-1), x.sum(-1), rtol=1e-12, atol=0)
    assert float(x.sum(-1).min()) > 50  # library sizes far from 1: proportions cannot pass


def test_synthetic_counts_are_fixed_and_overdispersed():
    a, truth = count_data()
    b, _ = count_data()
    assert torch.equal(a.train_x, b.train_x) and a.shape == (200,)
    assert a.train_x.shape == (4000, 200) and a.test_x.shape == (1000, 200)
    assert torch.equal(a.train_x, a.train_x.round()) and (a.train_x.sum(-1) > 0).all()
    # negative binomial: variance above the Poisson's, var ~ mu + mu^2 / theta per gene
    x, z = a.train_x, truth.train_z
    rho = truth.proportions(z)
    library = x.sum(-1, keepdim=True)
    residual = (x - library * rho) ** 2 - library * rho  # E = mu^2 / theta
    excess = residual.sum(0)
    assert float((excess > 0).float().mean()) > 0.9  # nearly every gene is overdispersed
    theta_hat = ((library * rho) ** 2).sum(0)[excess > 0] / excess[excess > 0]
    ratio = (theta_hat / truth.theta[excess > 0]).log()
    assert float(ratio.abs().median()) < math.log(1.5)  # moment estimates near the truth


def test_true_likelihood_matches_quadrature(float64):
    """The importance-sampled log p(x | l) of the true model against a dense 2-D grid, on
    3 genes with few counts so that the posterior is broad."""
    truth = CountTruth(
        weight=torch.tensor([[1.0, -0.5], [0.2, 0.8], [-1.0, 0.3]]),
        bias=torch.zeros(3),
        theta=torch.tensor([0.7, 3.0, 10.0]),
        train_z=torch.zeros(0, 2),
        test_z=torch.zeros(0, 2),
    )
    x = torch.tensor([[2.0, 0.0, 1.0], [0.0, 5.0, 3.0]])
    z_drawn = torch.tensor([[0.5, 0.2], [-0.4, 1.0]])  # proposal centres
    # broad posteriors here: wide proposal components
    estimate, stderr = truth.log_likelihood(x, z_drawn, 20000, proposal_scales=(0.7, 2.5))
    grid = torch.linspace(-6, 6, 601)
    zz = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 1, 2)
    log_joint = truth.log_joint(x, zz.expand(-1, 2, 2))
    exact = torch.logsumexp(log_joint, 0) + 2 * math.log(float(grid[1] - grid[0]))
    assert (stderr < 0.1).all()
    torch.testing.assert_close(estimate, exact, atol=float(4 * stderr.max()), rtol=0)


def test_affine_r2():
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(200, 3, generator=g)
    target = codes[:, :2] @ torch.tensor([[2.0, 0.0], [1.0, -1.0]]) + 5
    assert affine_r2(codes, target) == pytest.approx(1.0, abs=1e-9)
    assert affine_r2(codes, torch.randn(200, 2, generator=g)) < 0.1


def test_counts_cannot_be_binarized():
    with pytest.raises(ConfigError, match="binarize none"):
        TrainConfig(likelihood="negative-binomial", binarize="dynamic")
    assert TrainConfig(likelihood="poisson").binarize == "none"
    assert TrainConfig(likelihood="bernoulli").binarize == "dynamic"
    assert TrainConfig(likelihood="beta").binarize == "none"


def test_count_vae_trains_from_the_cli(tmp_path, capsys):
    out = tmp_path / "nb"
    argv = ["train", "--dataset", "synthetic-counts", "--likelihood", "negative-binomial"]
    argv += ["--library", "observed", "--z-dim", "2", "--hidden", "32", "--epochs", "2"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    assert "reference check" in capsys.readouterr().out
    rows = runs.read_metrics(out / runs.METRICS)
    assert rows[-1]["test_neg_elbo"] < rows[0]["test_neg_elbo"]
    names = sorted(p.name for p in (out / runs.FIGURES).iterdir())
    assert "reconstructions.png" in names and "latent_map.png" in names
    assert "latent_traversal.png" not in names  # image-only figures are left out for vectors
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").stat().st_size > 50_000


@pytest.mark.parametrize(
    "options",
    [
        ["--prior", "vamp", "--pseudo-inputs", "20"],
        ["--likelihood", "beta"],
        ["--likelihood", "laplace", "--estimator", "iwae", "--particles", "3", "--grad", "dreg"],
        ["--guide", "low-rank", "--rank", "2"],
        ["--guide", "iaf", "--estimator", "iwae", "--particles", "3", "--grad", "stl"],
        ["--context", "top-half"],
    ],
    ids=["vamp", "beta", "laplace-iwae", "low-rank", "iaf-iwae-stl", "top-half"],
)
def test_new_families_train_on_images_from_the_cli(tmp_path, small_data_npz, options):
    out = tmp_path / "run"
    argv = ["train", "--dataset", "npz", "--data-dir", str(small_data_npz), "--epochs", "2"]
    argv += ["--hidden", "32", "--z-dim", "3", "--out", str(out), "--no-progress", *options]
    assert main(argv) == 0
    summary = json.loads((out / runs.SUMMARY).read_text())
    rc = summary["reference_check"]
    assert rc["pyro_loss"] == pytest.approx(rc["reference_loss"], rel=1e-4)
    rows = runs.read_metrics(out / runs.METRICS)
    assert all(math.isfinite(r["test_neg_elbo"]) for r in rows)
    assert rows[-1]["test_neg_elbo"] < rows[0]["test_neg_elbo"]


@pytest.fixture
def small_data_npz(tmp_path, mnist_sample):
    path = tmp_path / "small.npz"
    import numpy as np

    d = mnist_sample
    np.savez(
        path,
        train_x=d.train_x[::10].reshape(-1, 28, 28).numpy(),  # every class
        test_x=d.test_x[::10].reshape(-1, 28, 28).numpy(),
        train_y=d.train_y[::10].numpy(),
        test_y=d.test_y[::10].numpy(),
    )
    return path


def test_count_recovery_study(tmp_path):
    """Two epochs already order the families: NB and ZINB far above Poisson on
    overdispersed counts, all below the true model."""
    result = count_recovery(tmp_path, epochs=2, num_samples=20)
    rows = {r["model"]: r for r in result["rows"]}
    truth = rows["true model"]["log_px"]
    for family in COUNTS:
        assert rows[family]["log_px"] < truth
        assert 0 <= rows[family]["latent_r2"] <= 1
    assert rows["negative-binomial"]["log_px"] > rows["poisson"]["log_px"] + 50
    assert "log_theta_correlation" in rows["negative-binomial"]
    assert (tmp_path / "count_recovery.png").stat().st_size > 20_000
    assert "true model" in (tmp_path / "count_recovery.md").read_text()


# --- two stochastic layers ------------------------------------------------------------------


def _two_layer(beta: float = 1.0, likelihood: str = "bernoulli", prior: str = "normal"):
    torch.manual_seed(1)
    vae = build_model(
        (1, 28, 28),
        model="two-layer",
        likelihood=likelihood,
        prior=prior,
        z_dim=4,
        z2_dim=3,
        hidden=(16,),
        upper_hidden=(8,),
        beta=beta,
        **({"components": 3} if prior == "mixture" else {}),
    )
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return vae


@pytest.mark.parametrize("likelihood,prior", [("bernoulli", "normal"), ("gaussian", "mixture")])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_two_layer_trace_elbo_matches_the_reference(float64, likelihood, prior, beta):
    vae = _two_layer(beta, likelihood, prior)
    x = make_data(likelihood)
    pyro_loss, ref_loss = pyro_and_reference_loss(vae, make_estimator("trace"), x)
    torch.testing.assert_close(pyro_loss, ref_loss, rtol=1e-9, atol=0)
    params = list(vae.parameters())
    for g, w in zip(grads(pyro_loss, params), grads(ref_loss, params), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("grad", ["standard", "stl", "dreg"])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("K", [1, 4])
def test_two_layer_iwae_gradients_match_the_reference(float64, grad, beta, K):
    """Both layers local to each image: the per-datapoint bound and its STL/DReG gradients,
    which for two layers re-run the guide at constant parameters (see pyro_vae/iwae.py)."""
    vae = _two_layer(beta)
    x = make_data("bernoulli", n=4)
    keeper = _KeepSample(vae)
    loss = make_estimator("iwae", K, grad).differentiable_loss(vae.model, keeper.guide, x)
    eps = tuple(e.detach().reshape(K, 4, -1) for e in _two_layer_noise(vae, x, keeper.z))
    torch.testing.assert_close(loss, -reference_iwae(vae, x, eps, beta).sum(), rtol=1e-9, atol=0)
    got = torch.autograd.grad(loss, list(vae.parameters()), allow_unused=True)
    want = reference_iwae_gradients(vae, x, eps, beta, grad)
    for (name, p), g, w in zip(vae.named_parameters(), got, want, strict=True):
        g = torch.zeros_like(p) if g is None else g
        torch.testing.assert_close(g, w, rtol=1e-7, atol=1e-9, msg=name)


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(estimator="mean-field"), "estimator trace or iwae"),
        (dict(estimator="trace", guide="iaf"), "--guide does not apply to --model two-layer"),
        (dict(estimator="trace", prior="vamp"), "use it with one layer"),
        (dict(estimator="trace", network="conv"), "--network does not apply to --model two-layer"),
    ],
)
def test_two_layer_refuses_what_does_not_apply(options, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(model="two-layer", **options)


def test_two_layer_trains_from_the_cli(tmp_path, small_data_npz):
    out = tmp_path / "tl"
    argv = ["train", "--dataset", "npz", "--data-dir", str(small_data_npz), "--epochs", "2"]
    argv += ["--model", "two-layer", "--z-dim", "6", "--z2-dim", "3", "--hidden", "32"]
    argv += ["--upper-hidden", "16", "--estimator", "iwae", "--particles", "3", "--grad", "dreg"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    rows = runs.read_metrics(out / runs.METRICS)
    assert rows[-1]["test_neg_elbo"] < rows[0]["test_neg_elbo"]
    assert main(["evaluate", str(out), "--num-samples", "20", "--no-progress"]) == 0
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["test_log_likelihood"] > -evaluation["test_neg_elbo"]  # log p(x) >= ELBO
    assert evaluation["z_dim"] == 6 and evaluation["kl_per_dim"] is None


# --- conditional VAE --------------------------------------------------------------------------


def _conditional(context: str, guide: str = "diagonal", beta: float = 1.0):
    data = with_context(
        ImageData(torch.rand(10, 784), torch.arange(10), torch.rand(6, 784), torch.arange(6)),
        context,
    )
    torch.manual_seed(1)
    vae = build_model(
        data.shape,
        context=context,
        context_dim=data.context_dim,
        z_dim=3,
        hidden=(16,),
        guide=guide,
        beta=beta,
    )
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.2 * torch.randn_like(p))
    x = data.test_x.to(torch.get_default_dtype())
    return vae, torch.cat([torch.bernoulli(x[:, : vae.data_dim]), x[:, vae.data_dim :]], -1)


def test_contexts_are_appended_to_each_row():
    base = ImageData(
        torch.rand(5, 784), torch.tensor([3, 1, 4, 1, 5]), torch.rand(2, 784), torch.tensor([9, 2])
    )
    label = with_context(base, "label")
    assert label.context_dim == 10 and label.shape == (1, 28, 28)
    torch.testing.assert_close(label.train_x[:, :784], base.train_x)
    assert label.train_x[:, 784:].argmax(-1).tolist() == [3, 1, 4, 1, 5]
    half = with_context(base, "top-half")
    assert half.shape == (1, 14, 28) and half.context_dim == 14 * 28
    image = base.test_x.reshape(-1, 28, 28)
    torch.testing.assert_close(half.test_x[:, :392], image[:, 14:].flatten(1))  # observed
    torch.testing.assert_close(half.test_x[:, 392:], image[:, :14].flatten(1))  # context
    assert with_context(half, "top-half") is half
    with pytest.raises(ValueError, match="unknown context"):
        with_context(base, "colour")


@pytest.mark.parametrize("context", ["label", "top-half"])
@pytest.mark.parametrize("estimator", ["trace", "mean-field"])
@pytest.mark.parametrize("guide", ["diagonal", "iaf"])
def test_conditional_vae_matches_the_reference(float64, context, estimator, guide):
    vae, x = _conditional(context, guide, beta=0.5)
    pyro_loss, ref_loss = pyro_and_reference_loss(vae, make_estimator(estimator), x)
    torch.testing.assert_close(pyro_loss, ref_loss, rtol=1e-9, atol=0)
    params = list(vae.parameters())
    for g, w in zip(grads(pyro_loss, params), grads(ref_loss, params), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("context", ["label", "top-half"])
def test_conditional_vae_iwae_dreg_matches_the_reference(float64, context):
    vae, x = _conditional(context)
    loss, eps = loss_and_eps(vae, make_estimator("iwae", 3, "dreg"), x)
    eps = eps.reshape(3, x.shape[0], -1)
    torch.testing.assert_close(loss, -reference_iwae(vae, x, eps, 1.0).sum(), rtol=1e-9, atol=0)
    got = torch.autograd.grad(loss, list(vae.parameters()), allow_unused=True)
    want = reference_iwae_gradients(vae, x, eps, 1.0, "dreg")
    for (name, p), g, w in zip(vae.named_parameters(), got, want, strict=True):
        g = torch.zeros_like(p) if g is None else g
        torch.testing.assert_close(g, w, rtol=1e-7, atol=1e-9, msg=name)


def test_label_samples_share_codes_across_classes():
    """Two codes per class: row 2c + k decodes (code k, class c)."""
    vae, _ = _conditional("label")
    torch.manual_seed(0)
    samples = vae.sample(20)
    assert samples.shape == (20, 784)
    torch.manual_seed(0)
    codes = vae.prior().sample((2,))
    expected = vae.decode(codes[torch.arange(20) % 2], torch.eye(10)[torch.arange(20) // 2])
    torch.testing.assert_close(samples, expected)
    with pytest.raises(ValueError, match="like="):
        _conditional("top-half")[0].sample(4)


def test_conditional_vae_trains_from_the_cli_and_uses_its_context(tmp_path, small_data_npz):
    out = tmp_path / "cvae"
    argv = ["train", "--dataset", "npz", "--data-dir", str(small_data_npz), "--epochs", "20"]
    argv += ["--context", "label", "--z-dim", "2", "--hidden", "64", "--batch-size", "32"]
    argv += ["--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    run = load_run(out, "cpu")
    x = run.test_x
    shuffled = torch.cat([x[:, :784], x[torch.randperm(len(x)), 784:]], -1)
    torch.manual_seed(0)
    right = evaluate_elbo(run.vae.model, run.vae.guide, x).neg_elbo
    torch.manual_seed(0)
    wrong = evaluate_elbo(run.vae.model, run.vae.guide, shuffled).neg_elbo
    assert wrong > right + 5  # the label carries information the model uses
    names = sorted(p.name for p in (out / runs.FIGURES).iterdir())
    assert "prior_samples.png" in names and "latent_traversal.png" not in names
    with pytest.raises(ConfigError, match="model vae"):
        TrainConfig(context="label", model="two-layer", estimator="trace")
