"""One options schema: each option declared once, read by the command line, config.json,
resume and the builders; an option that does not apply is refused, never dropped."""

from __future__ import annotations

import json

import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_vae import LIKELIHOODS, TrainConfig, build_vae, make_estimator
from pyro_vae.cli import main
from pyro_vae.inference import ESTIMATORS, EstimatorTraits
from pyro_vae.model import DISCRETE_SITES
from pyro_vae.model.likelihoods import Likelihood
from pyro_vae.registry import OptionError
from pyro_vae.training import ConfigError, assemble, options
from pyro_vae.training.schema import flag_of


@pytest.mark.parametrize(
    "argv,where",
    [
        (["--free-bits", "0.5"], "estimator free-bits"),  # its default value: still refused
        (["--grad", "dreg"], "estimator iwae"),
        (["--estimator", "free-bits", "--particles", "3"], "estimator trace, mean-field, enum"),
        (["--sigma", "0.2"], "likelihood gaussian"),
        (["--z2-dim", "8"], "model two-layer"),
        (["--rank", "3"], "guide low-rank"),
        (["--data-dir", "/tmp"], "dataset fashion-mnist, mnist, npz"),
        (["--cuda-graphs"], "applies only with --compile"),
        (["--capacity-epochs", "2"], "applies only with --estimator capacity"),
        (["--network", "conv", "--hidden", "64"], "network mlp"),
    ],
)
def test_an_option_that_does_not_apply_is_refused_in_one_line(tmp_path, capsys, argv, where):
    out = tmp_path / "run"
    assert main(["train", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and where in err and "Traceback" not in err
    assert not out.exists()


def test_a_config_refuses_a_value_set_where_it_does_not_apply():
    """From Python too: an inapplicable option at anything but its default is refused, and a
    config varied with ``dataclasses.replace`` cannot carry one into a part that ignores it."""
    import dataclasses

    with pytest.raises(ConfigError, match="--sigma does not apply .* likelihood gaussian"):
        TrainConfig(sigma=0.3)
    gaussian = TrainConfig(likelihood="gaussian", sigma=0.3)
    with pytest.raises(ConfigError, match="--sigma does not apply"):
        dataclasses.replace(gaussian, likelihood="bernoulli")
    at_default = TrainConfig(free_bits=0.5)  # the default: nothing was asked for
    assert at_default.free_bits is None
    switched = dataclasses.replace(at_default, estimator="free-bits")
    assert switched.free_bits == 0.5 and switched.particles is None


def test_options_reach_the_parts_that_take_them_and_no_others():
    vae = build_vae((1, 28, 28), likelihood="gaussian", sigma=0.3, hidden=(32,), z_dim=3)
    assert vae.likelihood.sigma == 0.3 and vae.encoder.body[0][0].out_features == 32
    with pytest.raises(TypeError, match="'hiden'"):
        build_vae((1, 28, 28), hiden=(64,))
    with pytest.raises(TypeError, match="likelihood 'bernoulli': -"):
        build_vae((1, 28, 28), sigma=0.3)  # an option of another likelihood
    with pytest.raises(TypeError, match="'grad' is an option of iwae"):
        make_estimator("trace", grad="dreg")
    with pytest.raises(OptionError):
        LIKELIHOODS.create("gaussian", 4, sigmaa=0.1)


def test_a_new_family_brings_its_option_along():
    """A likelihood with a keyword-only option of its own: build_vae routes it there."""

    class Tempered(Likelihood):
        def __init__(self, data_dim: int, *, temperature: float = 1.0) -> None:
            super().__init__(data_dim)
            self.temperature = temperature

        def forward(self, out, x=None):
            import pyro.distributions as dist

            return dist.Bernoulli(logits=out / self.temperature).to_event(1)

    LIKELIHOODS.register("tempered-test")(Tempered)
    try:
        vae = build_vae((4,), likelihood="tempered-test", temperature=2.0, hidden=(8,), z_dim=2)
        assert vae.likelihood.temperature == 2.0
    finally:
        LIKELIHOODS._entries.pop("tempered-test")


def test_iwae_without_particles_takes_its_own_default(tmp_path, mnist_sample):
    """--estimator iwae alone is the 5-particle bound (the estimator's default), not K = 1."""
    config = TrainConfig(estimator="iwae", epochs=1, hidden=(8,), z_dim=2, out=str(tmp_path))
    assert config.particles is None and config.grad == "standard"
    parts = assemble(config, mnist_sample)
    assert parts.step_estimator.num_particles == 5
    explicit = TrainConfig(estimator="iwae", particles=1, out=str(tmp_path))
    assert explicit.particles == 1  # K = 1 when asked for


def test_every_option_is_a_flag_and_reaches_the_config():
    """The command line is made from the declarations: each option has its flag, and the
    value given on the command line is the value in the config."""
    from pyro_vae.cli import parser, train_config

    train = parser()._subparsers._group_actions[0].choices["train"]
    flags = {a.option_strings[0] for a in train._actions if a.option_strings}
    assert {o.flag or flag_of(n) for n, o in options().items()} <= flags
    args = parser().parse_args(["train", "--likelihood", "gaussian", "--sigma", "0.25",
                                "--z-dim", "3", "--hidden", "16", "8", "--no-progress",
                                "--skip-reference-check"])  # fmt: skip
    config = train_config(args)
    assert (config.sigma, config.z_dim, config.hidden) == (0.25, 3, (16, 8))
    assert config.progress is False and config.check_reference is False


def test_config_json_records_the_options_the_run_used(tmp_path):
    config = TrainConfig(likelihood="gaussian", sigma=0.2, out=str(tmp_path))
    record = config.as_dict()
    assert record["sigma"] == 0.2 and record["free_bits"] is None and record["rank"] is None
    assert TrainConfig.from_dict(json.loads(json.dumps(record))) == config


def test_a_config_json_that_recorded_every_option_still_loads():
    """Earlier versions wrote every option, used or not: those that do not apply are dropped."""
    old = TrainConfig().as_dict() | {"free_bits": 0.5, "rank": 2, "sigma": 0.1, "particles": 1}
    old |= {"grad": "standard", "z2_dim": 50, "upper_hidden": [100, 100], "cuda_graphs": False}
    loaded = TrainConfig.from_dict(old)
    assert loaded.free_bits is None and loaded.rank is None and loaded.particles == 1
    with pytest.raises(ConfigError, match="unknown config keys: colour"):
        TrainConfig.from_dict(old | {"colour": "red"})


def test_resume_compares_every_option_but_the_resumable_ones():
    a = TrainConfig(epochs=2, out="x")
    assert a.differences(TrainConfig(epochs=5, out="y", device="cpu", progress=False)) == []
    assert a.differences(TrainConfig(epochs=2, out="x", lr=0.01)) == ["lr: 0.001 != 0.01"]
    resumable = {n for n, o in options().items() if o.resumable}
    assert resumable == {"epochs", "device", "out", "checkpoint_every", "check_reference",
                         "progress", "tensorboard", "memory_budget", "workers", "tracker",
                         "tracking_uri", "experiment", "tracker_errors",
                         "compile_from"}  # fmt: skip


def test_a_parts_own_check_fails_before_any_data_is_read():
    """The config builds the model once on the side: the parts' own checks (written once, in
    the parts) stop a bad value at once, without touching the random streams."""
    state = torch.get_rng_state()
    with pytest.raises(ConfigError, match="gaussian needs sigma > 0"):
        TrainConfig(likelihood="gaussian", sigma=0.0)
    with pytest.raises(ConfigError, match="low-rank needs rank >= 1"):
        TrainConfig(guide="low-rank", rank=0)
    with pytest.raises(ConfigError, match="use it with one layer"):
        TrainConfig(model="two-layer", estimator="trace", prior="vamp")
    assert torch.equal(torch.get_rng_state(), state)


def test_the_estimator_left_out_is_one_the_model_can_use():
    assert TrainConfig().estimator == "mean-field"
    assert TrainConfig(model="two-layer").estimator == "trace"  # no analytic KL for z2 | z1
    assert TrainConfig(model="two-layer", estimator="auto").estimator == "trace"
    assert TrainConfig(model="two-layer", estimator="iwae").estimator == "iwae"
    with pytest.raises(ConfigError, match="two-layer needs --estimator trace or iwae"):
        TrainConfig(model="two-layer", estimator="mean-field")
    saved = TrainConfig(model="two-layer").as_dict()
    assert saved["estimator"] == "trace"  # config.json records the choice, not "auto"
    assert TrainConfig.from_dict({**saved, "estimator": "auto"}).estimator == "trace"


@pytest.fixture
def toy_estimators(monkeypatch):
    """Estimators registered in a test with the traits it gives them, gone after it."""
    monkeypatch.setattr(ESTIMATORS, "_entries", dict(ESTIMATORS._entries))

    def register(name: str, traits: EstimatorTraits | None = None) -> None:
        def factory(*, num_particles: int = 1) -> Trace_ELBO:
            return Trace_ELBO(num_particles=num_particles, max_plate_nesting=1)

        ESTIMATORS.register(name, traits)(factory)

    return register


def test_the_rules_read_the_traits_an_estimator_is_registered_with(toy_estimators):
    """A new estimator's traits decide which models it takes, with no list to extend."""
    toy_estimators("toy-sampled", EstimatorTraits(sampled_kl=True))
    toy_estimators("toy-shaping", EstimatorTraits(kl_per_dimension=True))
    toy_estimators("toy-discrete", EstimatorTraits(needs_discrete_site=True))
    toy_estimators("toy-plain")  # no traits: the cautious defaults
    assert TrainConfig(model="two-layer", estimator="toy-sampled").estimator == "toy-sampled"
    with pytest.raises(ConfigError, match="needs --estimator trace or iwae, .*ciwae, toy-sampled"):
        TrainConfig(model="two-layer", estimator="toy-plain")
    assert TrainConfig(estimator="toy-plain").estimator == "toy-plain"
    with pytest.raises(ConfigError, match="toy-shaping needs the KL per dimension: --guide"):
        TrainConfig(estimator="toy-shaping", guide="low-rank")
    with pytest.raises(ConfigError, match="toy-shaping needs the KL per dimension in closed"):
        TrainConfig(estimator="toy-shaping", prior="mixture")
    with pytest.raises(ConfigError, match="toy-discrete is for a model with a class variable"):
        TrainConfig(estimator="toy-discrete")
    assert TrainConfig(model="joint", discrete="relaxed").estimator == "trace"
    with pytest.raises(ConfigError, match="--discrete relaxed is estimated by --estimator trace"):
        TrainConfig(model="joint", discrete="relaxed", estimator="toy-sampled")


@pytest.mark.parametrize("estimator", ["free-bits", "capacity"])
def test_the_kl_shaping_estimators_take_both_gaussian_priors(estimator):
    """The KL per dimension is closed form against N(0, I) and the learned N(mu, sigma^2)
    alike: both are taken, and a prior without one (mixture, vamp) is refused."""
    for prior in ("normal", "learned-normal"):
        config = TrainConfig(estimator=estimator, prior=prior)
        assert (config.estimator, config.prior) == (estimator, prior)
    for prior in ("mixture", "vamp"):
        with pytest.raises(ConfigError, match="KL per dimension in closed form: --prior normal"):
            TrainConfig(estimator=estimator, prior=prior)


def test_the_built_in_estimators_declare_their_traits():
    """The traits the rules read, as each estimator is registered (what the rules refused by
    name before the traits existed)."""
    assert ESTIMATORS.having("sampled_kl") == ["trace", "iwae", "renyi", "miwae", "piwae", "ciwae"]
    assert ESTIMATORS.having("kl_per_dimension") == ["free-bits", "capacity"]
    assert ESTIMATORS.having("needs_discrete_site") == ["enum", "score-function"]
    assert [DISCRETE_SITES.get(n).estimated_by for n in DISCRETE_SITES] == [
        "enum", "score-function", "trace"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="no estimator trait 'grad'"):
        ESTIMATORS.having("grad")  # what it takes is its factory's parameters
    assert "grad" in ESTIMATORS.options("iwae") and "grad" not in ESTIMATORS.options("trace")
