"""The class-latent VAEs (``joint`` and the semi-supervised ``m2``) and their three treatments of
the class site (``enumerate``, ``score``, ``relaxed``).

- Pyro's losses and gradients equal the hand-written ones (float64, relative 1e-9).
- Enumeration is exact: against explicit Python loops over the classes.
- The score-function gradient is unbiased (its mean matches the enumerated gradient), the
  relaxed one at a high temperature is not.
- M2's masked branches: unlabelled rows give the unsupervised bound, a label changes only its
  own row, alpha weights only the labelled rows' classification term.
- Clear errors for bad options, and the helpers' shapes and meaning.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from support import grads

from pyro_vae.checks.reference_class_variable import (
    labelled_objective,
    reference_class_loss,
    reference_score_surrogate,
    unlabelled_objective,
)
from pyro_vae.inference.score_function import ScoreFunctionELBO
from pyro_vae.model.class_variable import (
    JointVAE,
    SemiSupervisedVAE,
    build_joint_vae,
    build_semi_supervised_vae,
)
from pyro_vae.model.discrete_sites import Enumerated, Relaxed
from pyro_vae.registry import UnknownNameError

SHAPE = (1, 4, 4)
D = 16
LABELLED_ROWS = {0: 2, 2: 0, 3: 1}  # row -> label; the other rows carry none


pytestmark = pytest.mark.usefixtures("one_thread")


def elbo_for(discrete: str):
    """The estimator each treatment of the class site is fitted with."""
    if discrete == "enumerate":
        return TraceEnum_ELBO(max_plate_nesting=1)
    if discrete == "score":
        return ScoreFunctionELBO(max_plate_nesting=1)
    return Trace_ELBO(max_plate_nesting=1)


def make_model(
    kind: str,
    discrete: str = "enumerate",
    *,
    classes: int = 3,
    likelihood: str = "bernoulli",
    beta: float = 0.7,
    beta_discrete: float = 1.3,
    alpha: float = 2.5,
    seed: int = 1,
    **options: object,
):
    """A tiny model (16 pixels, hidden (8,), z_dim 2) in the default dtype."""
    torch.manual_seed(seed)
    if discrete == "relaxed":
        options.setdefault("temperature", 0.7)
    common = {
        "discrete": discrete,
        "likelihood": likelihood,
        "z_dim": 2,
        "hidden": (8,),
        "beta": beta,
        "beta_discrete": beta_discrete,
        **options,
    }
    if discrete == "score":
        common["baseline_hidden"] = 5
    if kind == "joint":
        return build_joint_vae(SHAPE, classes=classes, **common)
    return build_semi_supervised_vae(SHAPE, classes, classifier_weight=alpha, **common)


def make_pixels(likelihood: str = "bernoulli", n: int = 6, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, D, generator=g, dtype=torch.get_default_dtype())
    if likelihood == "bernoulli":
        return torch.bernoulli(u, generator=g)
    if likelihood == "continuous-bernoulli":
        return u
    return 2 * u - 1  # real-valued


def with_labels(pixels: torch.Tensor, classes: int, labels: dict[int, int]) -> torch.Tensor:
    """M2 rows: pixels then K label columns, one-hot where the row has a label."""
    cols = pixels.new_zeros(pixels.shape[0], classes)
    for row, label in labels.items():
        cols[row, label] = 1
    return torch.cat([pixels, cols], -1)


def make_rows(vae, likelihood: str = "bernoulli", labels=None, n: int = 6) -> torch.Tensor:
    pixels = make_pixels(likelihood, n)
    if not isinstance(vae, SemiSupervisedVAE):
        return pixels
    return with_labels(pixels, vae.classes, LABELLED_ROWS if labels is None else labels)


def pyro_loss_and_draws(vae, elbo, x: torch.Tensor):
    """Pyro's differentiable loss and what the guide drew for it."""
    kept = {}

    def guide(x):
        kept["draws"] = vae.guide(x)
        return kept["draws"]

    return elbo.differentiable_loss(vae.model, guide, x), kept["draws"]


def assert_same_gradients(vae, loss_a, loss_b, rtol: float = 1e-9) -> None:
    """Every parameter's gradient equal, relative to the largest gradient of the model."""
    names = [n for n, _ in vae.named_parameters()]
    params = [p for _, p in vae.named_parameters()]
    ga, gb = grads(loss_a, params), grads(loss_b, params)
    scale = max(g.abs().max().item() for g in gb)
    assert scale > 0
    for name, a, b in zip(names, ga, gb, strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * scale, msg=f"gradient of {name}")


# --- 1. Pyro against the hand-written losses ----------------------------------------------------

# (beta, beta_discrete, alpha): weighted sites, a masked class site, a masked z site (alpha = 0)
WEIGHTS = [(0.7, 1.3, 2.5), (1.6, 0.0, 0.5), (0.0, 0.4, 0.0)]


@pytest.mark.parametrize("weights", WEIGHTS, ids=lambda w: "b{}-bd{}-a{}".format(*w))
@pytest.mark.parametrize("discrete", ["enumerate", "score", "relaxed"])
@pytest.mark.parametrize("kind", ["joint", "m2"])
def test_pyro_loss_and_gradients_equal_reference(float64, kind, discrete, weights):
    beta, beta_discrete, alpha = weights
    vae = make_model(kind, discrete, beta=beta, beta_discrete=beta_discrete, alpha=alpha)
    x = make_rows(vae)
    pyro_loss, draws = pyro_loss_and_draws(vae, elbo_for(discrete), x)
    ref_loss = reference_class_loss(vae, x, draws)
    assert pyro_loss.dtype == torch.float64 and torch.isfinite(ref_loss)
    torch.testing.assert_close(pyro_loss, ref_loss, rtol=1e-9, atol=0)
    if discrete == "score":  # the gradients are the surrogate's, with the baseline's loss
        ref_loss = reference_score_surrogate(vae, x, draws)
    assert_same_gradients(vae, pyro_loss, ref_loss)


@pytest.mark.parametrize("likelihood", ["continuous-bernoulli", "gaussian", "gaussian-learned"])
@pytest.mark.parametrize("discrete", ["enumerate", "relaxed"])
@pytest.mark.parametrize("kind", ["joint", "m2"])
def test_other_likelihoods_equal_reference(float64, kind, discrete, likelihood):
    options = {"sigma": 0.6} if likelihood == "gaussian" else {}
    vae = make_model(kind, discrete, likelihood=likelihood, **options)
    x = make_rows(vae, likelihood)
    pyro_loss, draws = pyro_loss_and_draws(vae, elbo_for(discrete), x)
    ref_loss = reference_class_loss(vae, x, draws)
    torch.testing.assert_close(pyro_loss, ref_loss, rtol=1e-9, atol=0)
    assert_same_gradients(vae, pyro_loss, ref_loss)


@pytest.mark.parametrize("kind", ["joint", "m2"])
def test_ten_classes_equal_reference(float64, kind):
    labels = {0: 9, 1: 4, 4: 0}
    vae = make_model(kind, "enumerate", classes=10)
    x = make_rows(vae, labels=labels, n=8)
    pyro_loss, draws = pyro_loss_and_draws(vae, elbo_for("enumerate"), x)
    ref_loss = reference_class_loss(vae, x, draws)
    torch.testing.assert_close(pyro_loss, ref_loss, rtol=1e-9, atol=0)
    assert_same_gradients(vae, pyro_loss, ref_loss)


# --- 2. enumeration is exact ---------------------------------------------------------------------


def test_enumeration_of_a_mixture_is_the_exact_sum_and_log_evidence(float64):
    """c ~ Cat(pi), x ~ Bernoulli(theta_c) on 5 pixels: TraceEnum_ELBO is the sum over classes,
    and at the exact posterior it is -log p(x)."""
    k, d, n = 4, 5, 3
    torch.manual_seed(0)
    pi_logits = torch.randn(k, requires_grad=True)
    theta_logits = torch.randn(k, d, requires_grad=True)
    q_logits = torch.randn(n, k, requires_grad=True)
    x = torch.bernoulli(torch.full((n, d), 0.5))

    def model(x, q_logits):
        with pyro.plate("data", n):
            c = pyro.sample("c", dist.Categorical(logits=pi_logits))
            pyro.sample("x", dist.Bernoulli(logits=theta_logits[c]).to_event(1), obs=x)

    def guide(x, q_logits):
        with pyro.plate("data", n):
            pyro.sample("c", dist.Categorical(logits=q_logits), infer={"enumerate": "parallel"})

    def log_joint(row: int, c: int):
        """log p(c) + log p(x_row | c), one pixel at a time."""
        log_pi = pi_logits - torch.logsumexp(pi_logits, 0)
        total = log_pi[c]
        for i in range(d):
            p = torch.sigmoid(theta_logits[c, i])
            total = total + (torch.log(p) if x[row, i] == 1 else torch.log(1 - p))
        return total

    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    loss = elbo.differentiable_loss(model, guide, x, q_logits)
    q = torch.softmax(q_logits, -1)
    by_hand = 0.0
    for row in range(n):
        for c in range(k):
            by_hand = by_hand - q[row, c] * (log_joint(row, c) - torch.log(q[row, c]))
    torch.testing.assert_close(loss, by_hand, rtol=1e-12, atol=0)
    leaves = [pi_logits, theta_logits, q_logits]
    pyro_grads, hand_grads = torch.autograd.grad(loss, leaves), torch.autograd.grad(by_hand, leaves)
    for a, b in zip(pyro_grads, hand_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)

    # at the exact posterior q(c|x) = p(c|x) the bound is tight: -log p(x)
    with torch.no_grad():
        joint = [[log_joint(row, c).item() for c in range(k)] for row in range(n)]
        log_evidence = [math.log(sum(math.exp(v) for v in r)) for r in joint]
        exact = torch.tensor([[v - e for v in r] for r, e in zip(joint, log_evidence, strict=True)])
        tight = elbo.loss(model, guide, x, exact)
    assert tight == pytest.approx(-sum(log_evidence), rel=1e-12)
    # and any other q is looser
    assert elbo.loss(model, guide, x, exact + torch.randn(n, k)) > tight + 1e-3


def test_joint_enumeration_equals_loop_over_conditioned_classes(float64):
    """The enumerated JointVAE loss is sum_k q(k|x) [log p(x, k, z_k) - log q(k, z_k | x)]
    with each term from the model and guide run with the class site conditioned to k (no
    enumeration), at the enumerated draws z_k (rebuilt as loc + scale * eps so that the
    gradients flow as the reparameterised draws do)."""
    vae = make_model("joint", "enumerate", classes=3)
    x = make_rows(vae)
    loss, (_, z_enum) = pyro_loss_and_draws(vae, elbo_for("enumerate"), x)
    assert z_enum.shape == (3, x.shape[0], 2)
    q = torch.softmax(vae.classifier(x), -1)
    looped = 0.0
    for k in range(3):
        c = F.one_hot(torch.full((x.shape[0],), k), 3).to(x)
        loc, scale = vae.encoder(x, c)
        z = loc + scale * ((z_enum[k] - loc) / scale).detach()
        data = {"c": c, "z": z}
        guide_trace = poutine.trace(poutine.condition(vae.guide, data)).get_trace(x)
        model_trace = poutine.trace(poutine.condition(vae.model, data)).get_trace(x)
        log_w = 0.0
        for trace, sign in [(model_trace, 1), (guide_trace, -1)]:
            trace.compute_log_prob()
            sites = [s for s in trace.nodes.values() if s["type"] == "sample"]
            assert {s["name"] for s in sites} >= {"c", "z"}
            log_w = log_w + sign * sum(s["log_prob"] for s in sites)  # scaled by the betas
        looped = looped - (q[:, k] * log_w).sum()
    torch.testing.assert_close(loss, looped, rtol=1e-9, atol=0)
    assert_same_gradients(vae, loss, looped)


# --- 3. statistical: score function unbiased, relaxed biased --------------------------------------


def _classifier_gradients(vae, elbo, x, reps: int, seed: int) -> torch.Tensor:
    params = list(vae.classifier.parameters())
    out = []
    for r in range(reps):
        pyro.set_rng_seed(seed + r)
        loss = elbo.differentiable_loss(vae.model, vae.guide, x)
        out.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]))
    return torch.stack(out)


def _t_statistics(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(mean a - mean b) / its standard error, for the elements that vary."""
    se = (a.var(0) / a.shape[0] + b.var(0) / b.shape[0]).sqrt()
    varies = se > 0
    return (a.mean(0) - b.mean(0))[varies] / se[varies]


def test_score_function_is_unbiased_and_relaxed_biased(float64):
    vae = make_model("joint", "score", classes=3, seed=3)

    def twin(discrete):
        return JointVAE(
            vae.classifier, vae.encoder, vae.decoder, vae.likelihood, vae.prior, discrete,
            classes=3, beta=vae.beta, beta_discrete=vae.beta_discrete,
        )  # fmt: skip

    enumerated, relaxed = twin(Enumerated()), twin(Relaxed(temperature=5.0))
    image = make_pixels(n=1, seed=5)
    x = image.expand(1000, D).clone()
    with torch.no_grad():  # centre the baseline on the mean cost: less variance, same mean
        pyro.set_rng_seed(0)
        cost = elbo_for("enumerate").loss(enumerated.model, enumerated.guide, x) / x.shape[0]
        vae.discrete.baseline[-1].weight.zero_()
        vae.discrete.baseline[-1].bias.fill_(-cost)

    reps = 20
    with pyro.validation_enabled(False):  # checked above; here it would only cost time
        exact = _classifier_gradients(enumerated, elbo_for("enumerate"), x, reps, seed=100)
        score = _classifier_gradients(vae, elbo_for("score"), x, reps, seed=200)
        biased = _classifier_gradients(relaxed, elbo_for("relaxed"), x, reps, seed=300)

    t_score = _t_statistics(score, exact)
    assert t_score.numel() >= 10  # enough varying elements to say something
    assert t_score.abs().max() < 4, t_score
    t_relaxed = _t_statistics(biased, exact)
    assert t_relaxed.abs().max() > 10, t_relaxed


# --- 4. M2's masked branches ---------------------------------------------------------------------


@pytest.mark.parametrize("discrete", ["enumerate", "score", "relaxed"])
def test_unlabelled_m2_batch_is_the_joint_objective(float64, discrete):
    vae = make_model("m2", discrete, alpha=3.0)
    x = make_rows(vae, labels={})
    pixels = x[:, :D]
    pyro.set_rng_seed(7)
    loss, (y, z, _) = pyro_loss_and_draws(vae, elbo_for(discrete), x)
    torch.testing.assert_close(
        loss, -unlabelled_objective(vae, pixels, y, z).sum(), rtol=1e-9, atol=0
    )

    # a JointVAE made of the same parts, run on the pixels with the same noise (the M2 guide
    # first draws the masked labelled branch's z: N x z_dim normals), gives the same loss
    joint = JointVAE(
        vae.classifier, vae.encoder, vae.decoder, vae.likelihood, vae.prior, vae.discrete,
        classes=3, beta=vae.beta, beta_discrete=vae.beta_discrete,
    )  # fmt: skip
    pyro.set_rng_seed(7)
    torch.empty(x.shape[0], 2).normal_()
    joint_loss, (joint_y, joint_z) = pyro_loss_and_draws(joint, elbo_for(discrete), pixels)
    assert torch.equal(joint_y, y) and torch.equal(joint_z, z), "the noise does not line up"
    torch.testing.assert_close(loss, joint_loss, rtol=1e-12, atol=0)
    assert_same_gradients(vae, loss, joint_loss)

    # alpha does not touch unlabelled rows: same draws, same loss and gradients
    vae.alpha = 0.0
    pyro.set_rng_seed(7)
    loss_no_alpha, _ = pyro_loss_and_draws(vae, elbo_for(discrete), x)
    assert loss_no_alpha.item() == pytest.approx(loss.item(), rel=1e-12)
    assert_same_gradients(vae, loss_no_alpha, loss)


@pytest.mark.parametrize("discrete", ["enumerate", "score"])
def test_a_label_changes_only_its_rows_term(float64, discrete):
    vae = make_model("m2", discrete, alpha=1.5)
    before, after = {0: 2}, {0: 2, 4: 1}
    x_before, x_after = make_rows(vae, labels=before), make_rows(vae, labels=after)
    pixels = x_before[:, :D]
    pyro.set_rng_seed(11)
    loss_before, draws_before = pyro_loss_and_draws(vae, elbo_for(discrete), x_before)
    pyro.set_rng_seed(11)
    loss_after, draws_after = pyro_loss_and_draws(vae, elbo_for(discrete), x_after)
    # the same noise whatever the labels: only the flipped row's labelled z moves (its class)
    (y, z, z_labelled), (y_after, z_after, z_labelled_after) = draws_before, draws_after
    assert torch.equal(y, y_after) and torch.equal(z, z_after)
    others = torch.arange(x_before.shape[0]) != 4
    assert torch.equal(z_labelled[others], z_labelled_after[others])

    row = slice(4, 5)
    z_row = z[:, row] if discrete == "enumerate" else z[row]
    y_row = y if discrete == "enumerate" else y[row]
    unlabelled = unlabelled_objective(vae, pixels[row], y_row, z_row)
    label = F.one_hot(torch.tensor([1]), 3).to(pixels)
    labelled = labelled_objective(vae, pixels[row], label, z_labelled_after[row])
    change = (loss_after - loss_before).item()
    assert change == pytest.approx((unlabelled - labelled).item(), rel=1e-8, abs=1e-10)
    assert abs(change) > 1e-3


@pytest.mark.parametrize("discrete", ["enumerate", "score", "relaxed"])
def test_alpha_weights_the_labelled_rows_log_q(float64, discrete):
    a = 3.7
    vae = make_model("m2", discrete, alpha=0.0)
    x = make_rows(vae)
    pyro.set_rng_seed(5)
    loss_zero, _ = pyro_loss_and_draws(vae, elbo_for(discrete), x)
    vae.alpha = a
    pyro.set_rng_seed(5)
    loss_a, _ = pyro_loss_and_draws(vae, elbo_for(discrete), x)

    log_q = torch.log_softmax(vae.classifier(x[:, :D]), -1)
    by_hand = sum(log_q[row, label] for row, label in LABELLED_ROWS.items())
    torch.testing.assert_close(loss_zero - loss_a, a * by_hand, rtol=1e-9, atol=1e-12)
    if discrete == "enumerate":
        params = list(vae.parameters())
        diff = [
            g0 - ga for g0, ga in zip(grads(loss_zero, params), grads(loss_a, params), strict=True)
        ]
        for d, g in zip(diff, grads(a * by_hand, params), strict=True):
            torch.testing.assert_close(d, g, rtol=1e-9, atol=1e-10)


# --- 5. errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build,options,match",
    [
        (build_joint_vae, {"classes": 1}, "at least 2 classes, got 1"),
        (build_semi_supervised_vae, {"context_dim": 1}, "at least 2 classes, got 1"),
        (build_joint_vae, {"hidden": ()}, "at least one hidden layer"),
        (build_semi_supervised_vae, {"hidden": []}, "at least one hidden layer"),
        (build_semi_supervised_vae, {"classifier_weight": -0.1}, "weight must be >= 0"),
        (build_joint_vae, {"beta_discrete": -1.0}, "beta must be >= 0"),
        (build_joint_vae, {"discrete": "relaxed", "temperature": 0.0}, "temperature must be > 0"),
        (build_semi_supervised_vae, {"discrete": "relaxed", "temperature": -2}, "must be > 0"),
        (build_joint_vae, {"discrete": "enumerate", "temperature": 1.0}, "'temperature'"),
    ],
)
def test_bad_options_are_clear_errors(build, options, match):
    with pytest.raises(ValueError, match=match):
        build(SHAPE, **{"hidden": (8,), "z_dim": 2, **options})


def test_negative_alpha_is_a_clear_error():
    vae = make_model("m2")
    parts = [vae.classifier, vae.encoder, vae.decoder, vae.likelihood, vae.prior, vae.discrete]
    with pytest.raises(ValueError, match="alpha must be >= 0, got -0.5"):
        SemiSupervisedVAE(*parts, classes=3, alpha=-0.5)


def test_alpha_is_the_classifier_weight_per_labelled_row():
    vae = build_semi_supervised_vae(SHAPE, 3, 20.0, classifier_weight=0.1, hidden=(8,), z_dim=2)
    assert vae.alpha == pytest.approx(2.0)
    assert make_model("m2", alpha=0.0).alpha == 0.0


@pytest.mark.parametrize("build", [build_joint_vae, build_semi_supervised_vae])
def test_unknown_discrete_estimator_is_named(build):
    with pytest.raises(UnknownNameError, match="unknown discrete estimator 'gumbel'.*enumerate"):
        build(SHAPE, discrete="gumbel", hidden=(8,), z_dim=2)


# --- 6. the helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["joint", "m2"])
def test_classify_reconstruct_and_posterior_shapes(kind):
    vae = make_model(kind, classes=3)
    x = make_rows(vae, n=5)
    probs = vae.classify(x)
    assert probs.shape == (5, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(5))
    assert (probs > 0).all()
    recon = vae.reconstruct(x)
    assert recon.shape == (5, D) and ((recon > 0) & (recon < 1)).all()
    posterior = vae.posterior(x)
    assert posterior.batch_shape == (5,) and posterior.event_shape == (2,)
    # both at the most probable class
    best = F.one_hot(probs.argmax(-1), 3).to(x)
    loc, scale = vae.encoder(x[:, :D], best)
    torch.testing.assert_close(posterior.mean, loc)
    torch.testing.assert_close(recon, torch.sigmoid(vae.decoder(loc, best)))
    if kind == "m2":  # the label columns are not the classifier's input
        torch.testing.assert_close(vae.classify(make_rows(vae, labels={}, n=5)), probs)
    with pytest.raises(ValueError, match="shape"):
        vae.classify(x[:, :-1])


@pytest.mark.parametrize("kind", ["joint", "m2"])
def test_sample_rows_are_classes_and_columns_share_z(kind):
    vae = make_model(kind, classes=3)
    pyro.set_rng_seed(4)
    samples = vae.sample(12)
    assert samples.shape == (12, D)
    pyro.set_rng_seed(4)
    codes = vae.prior().sample((4,))
    grid = samples.reshape(3, 4, D)  # rows: the classes; columns: the codes
    for k in range(3):
        y = F.one_hot(torch.tensor(k), 3).to(codes)
        torch.testing.assert_close(grid[k], vae.decode(codes, y))
    assert not torch.allclose(grid[0], grid[1])  # the class matters
    odd = vae.sample(7)  # n not a multiple of K: 2 codes per class, the last class fills up
    assert odd.shape == (7, D)
    torch.testing.assert_close(odd[6], odd[4])  # class 2, code 0 again
    assert not torch.allclose(odd[5], odd[4])


def test_score_function_leaves_labelled_rows_to_the_classification_term():
    """On rows with a label the unlabelled branch's y is never read: its score term would
    only add noise (and a baseline's offset) to q(y|x). With every row labelled the
    classifier's gradient is exactly alpha grad sum log q(label | x), whatever the baseline."""
    pyro.set_rng_seed(0)
    vae = build_semi_supervised_vae(
        (16,), 3, discrete="score", hidden=(8,), z_dim=2, classifier_weight=1.0
    ).double()
    x = torch.cat(
        [torch.bernoulli(torch.full((4, 16), 0.5)), torch.eye(3)[[0, 1, 2, 0]]], -1
    ).double()
    params = list(vae.classifier.parameters())
    log_q = torch.log_softmax(vae.classifier(x[:, :16]), -1)
    expected = torch.autograd.grad(-vae.alpha * (x[:, 16:] * log_q).sum(), params)
    for offset in (0.0, 10.0):
        with torch.no_grad():
            vae.discrete.baseline[-1].bias.add_(offset)
        loss = ScoreFunctionELBO(max_plate_nesting=1).differentiable_loss(vae.model, vae.guide, x)
        for got, want in zip(torch.autograd.grad(loss, params), expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
