"""beta for a model and guide we have never seen: a handler that weights every latent site.

A beta-VAE's objective weights the KL term (Higgins et al., 2017)::

    ELBO_beta = E_q[log p(x | z)] - beta * KL(q(z | x) || p(z))
              = E_q[log p(x | z) + beta * (log p(z) - log q(z | x))]

so beta multiplies the log-densities of every *latent* site, in the model (log p(z)) and in the
guide (log q(z | x)) alike, and leaves the observed sites alone. ``poutine.scale`` weights
every site of a block; the model's observed site sits in the same block as its latents in
most user code, so ``poutine.scale`` cannot be wrapped around a whole model. Pyro has no
handler that scales only the unobserved sites; :class:`LatentScaleMessenger` is that handler,
in the few lines ``ScaleMessenger`` takes. (``TraceMeanField_ELBO`` multiplies its analytic
KL by the guide site's scale, and the importance-weighted bounds read each site's scaled
log-density, so every estimator sees beta the same way.)

beta = 0 masks the latent sites (``poutine.scale(0)`` raises; a mask drops their densities
while z stays reparameterised), as :func:`pyro_vae.model.vae.kl_weight` does for our own
models. A tensor beta (a compiled graph's input) always scales.
"""

from __future__ import annotations

import contextlib

import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample


class LatentScaleMessenger(Messenger):
    """Multiplies the scale of every unobserved sample site by ``scale`` (or masks it out
    when ``mask`` is False); observed sites and subsample sites are untouched."""

    def __init__(self, scale: float | torch.Tensor = 1.0, mask: bool = True) -> None:
        super().__init__()
        self.scale = scale
        self.mask = mask

    def _process_message(self, msg: dict) -> None:
        if msg["type"] != "sample" or msg["is_observed"] or site_is_subsample(msg):
            return
        if not self.mask:
            msg["mask"] = False  # (what MaskMessenger's `mask & False` comes to)
        else:
            msg["scale"] = self.scale * msg["scale"]


def scale_latents(beta: float | torch.Tensor) -> contextlib.AbstractContextManager:
    """The handler that weights every latent site of a model or guide by ``beta`` (the KL
    weight); beta = 0 masks them, beta = 1 changes nothing."""
    if torch.is_tensor(beta):
        return LatentScaleMessenger(beta)
    beta = float(beta)
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta == 0:
        return LatentScaleMessenger(mask=False)
    if beta == 1:
        return contextlib.nullcontext()
    return LatentScaleMessenger(beta)
