"""The VAE as a Pyro program: ``model`` is the generative story, ``guide`` the encoder.

    model:  z ~ p(z),  x ~ p(x | z) = likelihood(decoder(z))       (in plate "data")
    guide:  z ~ q(z | x), by default N(loc(x), diag scale(x)^2)     (in plate "data")

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

from .guides import DiagonalGaussian, Posterior, build_guide
from .likelihoods import LIKELIHOODS, Likelihood
from .nets import NETWORKS
from .priors import PRIORS, Prior


def kl_weight(beta: float | torch.Tensor) -> contextlib.AbstractContextManager:
    """The handler that weights the latent site by ``beta`` (beta = 0 masks it out).

    A tensor ``beta`` (a compiled graph's input, so that a warm-up schedule does not retrace it)
    always scales; at 0 the weighted terms are multiplied by 0, which is the mask's value.
    """
    if torch.is_tensor(beta):
        return poutine.scale(scale=beta)
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta == 0:
        return poutine.mask(mask=False)
    if beta == 1:
        return contextlib.nullcontext()
    return poutine.scale(scale=beta)


class VAE(nn.Module):
    """A variational autoencoder written as a Pyro model/guide pair.

    ``conditional``: whether data rows carry a context after the observed pixels.

    Args:
        encoder: x -> (loc, scale) of q(z|x).
        decoder: z -> the likelihood's parameters.
        likelihood: decoder output -> p(x|z).
        prior: p(z).
        beta: weight of the KL term; may be changed between steps (KL warm-up).
        posterior: the variational family (:mod:`pyro_vae.guides`); diagonal Gaussian if None.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: Likelihood,
        prior: Prior,
        beta: float = 1.0,
        posterior: Posterior | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.prior = prior
        self.posterior = DiagonalGaussian(prior.z_dim) if posterior is None else posterior
        self.beta = beta
        # pyro.module puts the networks' parameters in Pyro's param store, for pyro.infer.SVI
        # and pyro.optim. The trainer optimises the module's parameters directly and turns it
        # off: it costs a param-store lookup per parameter per step.
        self.register_params = True
        self._beta_override: torch.Tensor | None = None

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

    @contextlib.contextmanager
    def beta_tensor(self, beta: torch.Tensor):
        """Within this block model and guide weight the latent site by the tensor ``beta``."""
        self._beta_override = beta
        try:
            yield
        finally:
            self._beta_override = None

    def _kl_weight(self) -> contextlib.AbstractContextManager:
        return kl_weight(self.beta if self._beta_override is None else self._beta_override)

    def _register(self, name: str, module: nn.Module) -> None:
        if self.register_params:
            pyro.module(name, module)

    def model(self, x: torch.Tensor) -> torch.Tensor:
        """p(x, z) = p(z) p(x | z), one z per image."""
        self._register("decoder", self.decoder)
        self._register("prior", self.prior)
        self._register("likelihood", self.likelihood)
        with pyro.plate("data", x.shape[0]):
            with self._kl_weight():
                z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(self.decoder(z), x), obs=x)
        return z

    def guide(self, x: torch.Tensor) -> torch.Tensor:
        """q(z | x), amortised by the encoder (diagonal Gaussian unless another family)."""
        self._register("encoder", self.encoder)
        self._register("posterior", self.posterior)
        q = self.posterior(self.encoder, x)
        with pyro.plate("data", x.shape[0]):
            with self._kl_weight():
                return pyro.sample("z", q)

    def guide_parameters(self) -> list[nn.Parameter]:
        """The variational parameters phi: the encoder's and the family's own."""
        return [*self.encoder.parameters(), *self.posterior.parameters()]

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z = loc(x)]: the decoded posterior mean."""
        loc, _ = self.encoder(x)
        return self.likelihood.mean(self.decoder(loc), x)

    @torch.no_grad()
    def sample(self, n: int, like: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z] for n draws z ~ p(z) (``like``: rows giving a conditional model's context)."""
        z = self.prior().sample((n,))
        return self.likelihood.mean(self.decoder(z))

    conditional = False

    def observed(self, x: torch.Tensor) -> torch.Tensor:
        """The part of each data row the likelihood models (all of it, here)."""
        return x

    def display(self, x: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """What figures show for rows x whose observed part is ``pixels``."""
        return pixels

    def display_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(shape)


class Autoencoder(VAE):
    """The same networks made deterministic: z = loc(x), and the objective is the
    reconstruction term -log p(x | z = loc(x)) alone.

    As a Pyro program the guide puts a point mass (``Delta``) at the encoder's mean and the
    model's prior is masked out (beta is fixed at 0), so every estimator's loss is the
    reconstruction term. Decoding random codes z ~ p(z) shows what a plain autoencoder lacks.
    """

    beta = property(lambda self: 0.0, lambda self, value: None)  # no KL term, ever

    def _kl_weight(self) -> contextlib.AbstractContextManager:
        return kl_weight(0.0)

    def guide(self, x: torch.Tensor) -> torch.Tensor:
        self._register("encoder", self.encoder)
        loc, _ = self.encoder(x)
        with pyro.plate("data", x.shape[0]):
            with self._kl_weight():
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
    guide: str = "diagonal",
    **options: object,
) -> VAE:
    """Assemble a VAE from registered names; ``options`` go to whichever parts accept them
    (``hidden`` for the MLP, ``sigma`` / ``sigma_floor`` for Gaussian likelihoods,
    ``components`` for the mixture prior, ``library`` for the count likelihoods,
    ``pseudo_inputs`` for the VampPrior, ``rank`` / ``flows`` / ``flow_hidden`` for the
    guide families). ``guide`` names the variational family. ``autoencoder`` builds the
    deterministic :class:`Autoencoder` with the same networks instead."""
    data_dim = int(torch.Size(data_shape).numel())
    lik = LIKELIHOODS.create(likelihood, data_dim, **options)
    pri = PRIORS.create(prior, z_dim, data_dim=data_dim, **options)
    encoder, decoder = NETWORKS.create(
        network, data_shape, z_dim, out_per_pixel=lik.params_per_pixel, **options
    )
    if lik.log_input:
        encoder = LogInputEncoder(encoder)
    pri.attach(encoder)
    posterior = build_guide(guide, z_dim, encoder, **options)
    if autoencoder:
        if guide != "diagonal":
            raise ValueError("the autoencoder's code is a point: --guide means nothing for it")
        return Autoencoder(encoder, decoder, lik, pri)
    return VAE(encoder, decoder, lik, pri, beta=beta, posterior=posterior)


class LogInputEncoder(nn.Module):
    """An encoder that reads log(1 + x): count data spans orders of magnitude."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.feature_dim = encoder.feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.features(torch.log1p(x))

    def head(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder.head(h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(torch.log1p(x))
