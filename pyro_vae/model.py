"""The VAE as a Pyro program: ``model`` is the generative story, ``guide`` the encoder.

    model:  z ~ p(z),  x ~ p(x | z) = likelihood(decoder(z))       (in plate "data")
    guide:  z ~ q(z | x) = N(loc(x), diag scale(x)^2)               (in plate "data")

Both are plain Pyro programs: ``SVI(vae.model, vae.guide, optim, Trace_ELBO())`` trains them.

beta-VAE (Higgins et al., 2017) weights the KL term: the objective is
``E_q[log p(x|z)] - beta * KL(q(z|x) || p(z))``. The weight has to reach the latent site in
*both* programs: ``Trace_ELBO`` scales log p(z) (model) and log q(z|x) (guide) separately, and
``TraceMeanField_ELBO`` scales the analytic KL by the guide site's scale alone, so scaling one
side only gives a silently wrong objective. ``poutine.scale(0)`` raises, so beta = 0 masks
the latent site instead (``poutine.mask(False)``): its log-densities drop out, z is still
reparameterised, and the objective is the reconstruction term alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from .likelihoods import LIKELIHOODS, Likelihood
from .nets import NETWORKS
from .priors import PRIORS, Prior


def kl_weight(beta: float) -> contextlib.AbstractContextManager:
    """The handler that weights the latent site by ``beta`` (beta = 0 masks it out)."""
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta == 0:
        return poutine.mask(mask=False)
    if beta == 1:
        return contextlib.nullcontext()
    return poutine.scale(scale=beta)


class VAE(nn.Module):
    """A variational autoencoder written as a Pyro model/guide pair.

    Args:
        encoder: x -> (loc, scale) of q(z|x).
        decoder: z -> the likelihood's parameters.
        likelihood: decoder output -> p(x|z).
        prior: p(z).
        beta: weight of the KL term; may be changed between steps (KL warm-up).
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: Likelihood,
        prior: Prior,
        beta: float = 1.0,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.prior = prior
        self.beta = beta

    @property
    def beta(self) -> float:
        return self._beta

    @beta.setter
    def beta(self, value: float) -> None:
        kl_weight(value)  # validates
        self._beta = float(value)

    @property
    def z_dim(self) -> int:
        return self.prior.z_dim

    def model(self, x: torch.Tensor) -> torch.Tensor:
        """p(x, z) = p(z) p(x | z), one z per image."""
        pyro.module("decoder", self.decoder)
        pyro.module("prior", self.prior)
        pyro.module("likelihood", self.likelihood)
        with pyro.plate("data", x.shape[0]):
            with kl_weight(self.beta):
                z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)
        return z

    def guide(self, x: torch.Tensor) -> torch.Tensor:
        """q(z | x) = N(loc(x), diag scale(x)^2), amortised by the encoder."""
        pyro.module("encoder", self.encoder)
        loc, scale = self.encoder(x)
        with pyro.plate("data", x.shape[0]):
            with kl_weight(self.beta):
                return pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z = loc(x)]: the decoded posterior mean."""
        loc, _ = self.encoder(x)
        return self.likelihood.mean(self.decoder(loc))

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """E[x | z] for n draws z ~ p(z)."""
        z = self.prior().sample((n,))
        return self.likelihood.mean(self.decoder(z))


class Autoencoder(VAE):
    """The same networks made deterministic: z = loc(x), and the objective is the
    reconstruction term -log p(x | z = loc(x)) alone.

    As a Pyro program the guide puts a point mass (``Delta``) at the encoder's mean and the
    model's prior is masked out (beta is fixed at 0), so every estimator's loss is the
    reconstruction term. Decoding random codes z ~ p(z) shows what a plain autoencoder lacks.
    """

    beta = property(lambda self: 0.0, lambda self, value: None)  # no KL term, ever

    def guide(self, x: torch.Tensor) -> torch.Tensor:
        pyro.module("encoder", self.encoder)
        loc, _ = self.encoder(x)
        with pyro.plate("data", x.shape[0]):
            with kl_weight(0.0):
                return pyro.sample("z", dist.Delta(loc).to_event(1))


def build_vae(
    data_shape: Sequence[int],
    *,
    network: str = "mlp",
    likelihood: str = "bernoulli",
    prior: str = "normal",
    z_dim: int = 16,
    beta: float = 1.0,
    autoencoder: bool = False,
    **options: object,
) -> VAE:
    """Assemble a VAE from registered names; ``options`` go to whichever parts accept them
    (``hidden`` for the MLP, ``sigma`` / ``sigma_floor`` for Gaussian likelihoods,
    ``components`` for the mixture prior). ``autoencoder`` builds the deterministic
    :class:`Autoencoder` with the same networks instead."""
    data_dim = int(torch.Size(data_shape).numel())
    lik = LIKELIHOODS.create(likelihood, data_dim, **options)
    pri = PRIORS.create(prior, z_dim, **options)
    encoder, decoder = NETWORKS.create(
        network, data_shape, z_dim, out_per_pixel=lik.params_per_pixel, **options
    )
    cls = Autoencoder if autoencoder else VAE
    return cls(encoder, decoder, lik, pri, beta=beta)
