"""Hand-written references registered by estimator class and found along its MRO: every
registered estimator has one or is declared to have none (and the check refuses it), a
subclass takes its nearest ancestor's, and a new estimator is checked by the one registered
for it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from pyro.infer import ELBO, RenyiELBO, Trace_ELBO
from support import make_data, make_vae

from pyro_vae import TrainConfig, make_estimator
from pyro_vae.checks import (
    MissingReference,
    ReferenceMismatch,
    check_against_reference,
    find_reference,
    pyro_and_reference_loss,
    reference_loss,
    register_no_reference,
    register_reference,
)
from pyro_vae.checks import references as registry
from pyro_vae.checks.reference_bounds import iwae_loss, renyi_loss
from pyro_vae.checks.reference_check import _KeepSample
from pyro_vae.checks.reference_losses import trace_elbo_loss
from pyro_vae.inference import ESTIMATORS, IWAE, MIWAE, RenyiBound
from pyro_vae.model import build_two_layer_vae
from pyro_vae.training import ConfigError

MANUAL = Path(__file__).resolve().parents[2] / "docs" / "estimators.md"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def fresh_registry(monkeypatch):
    """Registrations made in a test are gone after it."""
    monkeypatch.setattr(registry, "_REFERENCES", dict(registry._REFERENCES))


@pytest.mark.parametrize("name", ESTIMATORS.names())
def test_every_registered_estimator_has_a_reference_or_says_why_not(float64, name):
    """An estimator with a reference equals it on a plain VAE; one without was declared so,
    with the reason (a discrete site, whose model's reference checks it), and the first-batch
    check refuses it on a model that has no discrete site."""
    vae, x = make_vae("bernoulli", "normal"), make_data("bernoulli", n=3)
    elbo = make_estimator(name)
    if ESTIMATORS.traits(name).needs_discrete_site:
        with pytest.raises(MissingReference, match=f"{type(elbo).__name__}: it is for a model "):
            find_reference(elbo)
        with pytest.raises(MissingReference, match="with a discrete site"):
            check_against_reference(vae, elbo, x)
        return
    assert find_reference(elbo) is not None
    pyro_loss, ref_loss = pyro_and_reference_loss(vae, elbo, x)
    torch.testing.assert_close(pyro_loss, ref_loss, rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", ESTIMATORS.having("sampled_kl"))
def test_an_estimator_with_a_sampled_kl_has_the_two_layer_reference(float64, name):
    """The trait that lets an estimator train the two-layer model holds: its reference
    replays z2 | z1 and equals its loss."""
    torch.manual_seed(0)
    vae = build_two_layer_vae(
        (6,), likelihood="gaussian", z_dim=2, z2_dim=2, hidden=(4,), upper_hidden=(3,), sigma=0.5
    ).double()
    x = torch.randn(3, 6, dtype=torch.float64)
    elbo = make_estimator(name)
    keeper = _KeepSample(vae)
    loss = elbo.differentiable_loss(vae.model, keeper.guide, x)
    torch.testing.assert_close(reference_loss(vae, elbo, x, keeper.z), loss, rtol=1e-9, atol=0)


def test_a_subclass_finds_its_nearest_registered_ancestor(float64):
    """MRO order: a subclass of IWAE without a reference of its own takes IWAE's (as MIWAE
    does), and its loss equals it; a subclass of RenyiBound takes RenyiBound's, not IWAE's."""

    class MyIWAE(IWAE):
        pass

    class MyRenyi(RenyiBound):
        pass

    assert find_reference(MyIWAE()) is iwae_loss
    assert find_reference(MIWAE()) is iwae_loss
    assert find_reference(MyRenyi()) is renyi_loss
    vae, x = make_vae("bernoulli", "normal"), make_data("bernoulli", n=3)
    for elbo in (MyIWAE(num_particles=3, grad="dreg"), MyRenyi(num_particles=3, alpha=0.3)):
        pyro_loss, ref_loss = pyro_and_reference_loss(vae, elbo, x)
        torch.testing.assert_close(pyro_loss, ref_loss, rtol=1e-9, atol=0)


def test_an_estimator_with_no_reference_is_refused():
    """Along the MRO of a class no reference is registered for: the check stops."""
    vae, x = make_vae("bernoulli", "normal"), make_data("bernoulli", n=3)

    class Unknown(ELBO):
        def _get_trace(self, model, guide, args, kwargs):
            raise NotImplementedError

    for elbo in (Unknown(), RenyiELBO(alpha=0.0, num_particles=2)):
        message = f"no hand-written reference for {type(elbo).__name__}$"
        with pytest.raises(MissingReference, match=message):
            check_against_reference(vae, elbo, x)


def test_a_new_estimator_is_checked_by_the_reference_registered_for_it(fresh_registry):
    """Before its own registration a subclass of Trace_ELBO that doubles the loss is checked
    against Trace_ELBO's reference and fails; with its reference registered it passes."""

    class Doubled(Trace_ELBO):
        def differentiable_loss(self, model, guide, *args, **kwargs):
            return 2 * super().differentiable_loss(model, guide, *args, **kwargs)

    vae, x = make_vae("bernoulli", "normal"), make_data("bernoulli", n=3)
    with pytest.raises(ReferenceMismatch):
        check_against_reference(vae, Doubled(), x)

    @register_reference(Doubled)
    def doubled_loss(vae, elbo, x, eps):
        return 2 * trace_elbo_loss(vae, elbo, x, eps)

    assert find_reference(Doubled()) is doubled_loss
    check_against_reference(vae, Doubled(), x)
    with pytest.raises(ValueError, match="Doubled has a hand-written reference already"):
        register_reference(Doubled)(doubled_loss)


def test_a_class_declared_without_a_reference_overrides_its_ancestor(fresh_registry):
    class Sampled(Trace_ELBO):
        pass

    register_no_reference(Sampled, reason="its own reasons")
    with pytest.raises(MissingReference, match="no hand-written reference for Sampled: its own"):
        find_reference(Sampled())
    with pytest.raises(ValueError, match="Trace_ELBO has a hand-written reference already"):
        register_no_reference(Trace_ELBO, reason="twice")


def test_the_manual_s_new_estimator_is_honoured_by_the_rules_and_the_check(
    fresh_registry, monkeypatch, float64
):
    """estimators.md's 'Adding an estimator' example, run: its two pieces are all it takes."""
    monkeypatch.setattr(ESTIMATORS, "_entries", dict(ESTIMATORS._entries))
    section = MANUAL.read_text().split("## Adding an estimator", 1)[1]
    example = re.search(r"```py\n(.*?)```", section, flags=re.S).group(1)
    exec(compile(example, str(MANUAL), "exec"), {})
    assert TrainConfig(estimator="free-bits-total", free_bits=2.0).free_bits == 2.0
    with pytest.raises(ConfigError, match="free-bits-total needs the KL per dimension"):
        TrainConfig(estimator="free-bits-total", guide="low-rank")
    vae, x = make_vae("bernoulli", "normal", beta=0.5), make_data("bernoulli", n=3)
    for floor in (0.0, 1e3):  # the floor loose, and binding
        elbo = make_estimator("free-bits-total", free_bits=floor)
        pyro_loss, ref_loss = pyro_and_reference_loss(vae, elbo, x)
        torch.testing.assert_close(pyro_loss, ref_loss, rtol=1e-9, atol=0)
