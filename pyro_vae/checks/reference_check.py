"""Pyro's loss against the hand-written one, for the same z: the test suite's assertion and
the trainer's check on the first batch of every run."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pyro.infer import TraceEnum_ELBO
from torch import nn

from ..model.class_variable import JointVAE
from ..model.invariant import InvariantVAE
from .reference_densities import LOG_LIKELIHOODS, LOG_PRIORS
from .reference_guides import GUIDE_SAMPLES
from .reference_invariant import invariant_reference_loss, pyro_and_invariant_reference_loss
from .reference_losses import MissingReference, reference_loss
from .references import find_reference


class _KeepSample(nn.Module):
    """``guide`` is the VAE's guide, keeping the z it returns (a module method, so that
    estimators which re-run the guide with constant parameters can)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae
        self.z: torch.Tensor | tuple | None = None

    def guide(self, x: torch.Tensor):
        self.z = self.vae.guide(x)
        return self.z


def pyro_and_reference_loss(
    vae: nn.Module, elbo: object, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pyro's differentiable loss and the hand-written one, for the same z (the guide is
    wrapped to keep the z it sampled, so no random-number stream has to line up)."""
    if isinstance(vae, InvariantVAE):
        return pyro_and_invariant_reference_loss(vae, elbo, x)
    if not isinstance(vae, JointVAE):  # (whose reference is the model's, for any estimator)
        find_reference(elbo)  # refused before the guide runs
    keeper = _KeepSample(vae)
    pyro_loss = elbo.differentiable_loss(vae.model, keeper.guide, x)
    return pyro_loss, reference_loss(vae, elbo, x, keeper.z)


class ReferenceMismatch(RuntimeError):
    """Pyro's loss and the hand-written loss disagree."""


def _require_reference(vae: nn.Module) -> None:
    for kind, module, table, where in [
        ("likelihood", vae.likelihood, LOG_LIKELIHOODS, "reference_densities.LOG_LIKELIHOODS"),
        ("prior", vae.prior, LOG_PRIORS, "reference_densities.LOG_PRIORS"),
        ("guide", vae.q, GUIDE_SAMPLES, "reference_guides.GUIDE_SAMPLES"),
    ]:
        name = getattr(type(module), "registry_name", type(module).__name__)
        if name not in table:
            raise MissingReference(
                f"no hand-written reference for the {kind} {name!r}: add one to "
                f"pyro_vae.checks.{where} or skip the check (--skip-reference-check)"
            )


def missing_reference(vae: nn.Module, elbo: object) -> str | None:
    """Why ``vae`` trained by ``elbo`` has no hand-written loss to be checked against (its
    ``model`` or ``guide`` rewritten outside the package, a part or an estimator without a
    reference), or None when it has one."""
    if vae.runs_user_code():
        return f"{type(vae).__name__}'s model or guide is the user's own code"
    try:
        _require_reference(vae)
        if not isinstance(vae, (JointVAE, InvariantVAE)):
            find_reference(elbo)
    except MissingReference as err:
        return str(err).split(":")[0]
    return None


def check_against_reference(
    vae: nn.Module,
    elbo: object,
    x: torch.Tensor,
    rtol: float | None = None,
    step: Callable | None = None,
) -> tuple[float, float]:
    """Raise :class:`ReferenceMismatch` unless the two losses agree to ``rtol``.

    ``step`` checks a compiled step instead (:class:`pyro_vae.training.compiled.CompiledStep`, which
    returns its loss and the z it sampled) against the reference of ``elbo``.

    The default tolerance is 1e-4 in float32 (summation order differs) and 1e-9 in float64.
    """
    _require_reference(vae)
    if rtol is None:
        rtol = 1e-9 if x.dtype == torch.float64 else 1e-4
    # TraceEnum_ELBO refuses a loss that needs no gradient: keep autograd on for it
    with torch.set_grad_enabled(isinstance(elbo, TraceEnum_ELBO)):
        if step is None:
            pyro_loss, ref_loss = pyro_and_reference_loss(vae, elbo, x)
        else:
            pyro_loss, z = step(x, vae.beta)
            reference = (
                invariant_reference_loss if isinstance(vae, InvariantVAE) else reference_loss
            )
            ref_loss = reference(vae, elbo, x, z)
    p, r = float(torch.as_tensor(pyro_loss).detach()), float(torch.as_tensor(ref_loss).detach())
    if not (math.isfinite(p) and math.isfinite(r)) or abs(p - r) > rtol * max(abs(r), 1.0):
        raise ReferenceMismatch(
            f"Pyro's loss {p:.6f} differs from the hand-written loss {r:.6f} "
            f"(relative {abs(p - r) / max(abs(r), 1.0):.2e} > {rtol:.0e}) on the first batch: "
            "the objective being optimised is not the one the model describes"
        )
    return p, r
