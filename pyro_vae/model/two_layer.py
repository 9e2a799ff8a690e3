"""A VAE with two stochastic layers (Burda et al., 2016, sec. 5: 784-100-50 on MNIST):

    model:  z2 ~ p(z2),  z1 ~ N(mu(z2), diag sigma(z2)^2),  x ~ p(x | z1)
    guide:  z1 ~ N(loc(x), diag scale(x)^2),  z2 ~ N(loc'(z1), diag scale'(z1)^2)

with deterministic layers of ``hidden`` units between x and z1 (200-200 in the paper) and
``upper_hidden`` between z1 and z2 (100-100). Both latent sites live in ``plate("data")``, so
the per-datapoint IWAE bound and its STL/DReG gradients apply (Burda et al.'s best MNIST
number, -82.90 with k = 50, is this model). ``TraceMeanField_ELBO`` does not: in the guide z2
depends on z1, while in the model z1's parent is z2, which breaks its mean-field condition.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from .. import param_store
from .likelihoods import LIKELIHOODS
from .nets import LogInputEncoder, MLPDecoder, MLPEncoder
from .option_routing import route
from .priors import PRIORS
from .vae import VAE


class TwoLayerVAE(VAE):
    """Two stochastic layers; ``encoder``/``decoder`` are the x <-> z1 networks and
    ``upper_encoder``/``upper_decoder`` the z1 <-> z2 ones (both emit a diagonal Gaussian)."""

    weights_latents = True  # its model and guide weight their own sites

    latent_sites = ("z1", "z2")

    def __init__(self, encoder, decoder, upper_encoder, upper_decoder, likelihood, prior, beta):
        super().__init__(encoder, decoder, likelihood, prior, beta=beta)
        self.upper_encoder = upper_encoder
        self.upper_decoder = upper_decoder

    @property
    def z_dim(self) -> int:
        """The lower layer's size: the codes figures and active units are about."""
        return self.upper_decoder.head.linear.out_features // 2

    def model(self, x: torch.Tensor) -> torch.Tensor:
        """p(x, z1, z2) = p(z2) p(z1 | z2) p(x | z1)."""
        for name in ("decoder", "upper_decoder", "prior", "likelihood"):
            param_store.register(name, getattr(self, name))
        with self.data_plate(x):
            with self._kl_weight():
                z2 = pyro.sample("z2", self.prior())
                loc, scale = self.upper_decoder(z2)
                z1 = pyro.sample("z1", dist.Normal(loc, scale).to_event(1))
            pyro.sample("x", self.likelihood(self.decoder(z1), x), obs=x)
        return z1

    def guide(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z1, z2 | x) = q(z1 | x) q(z2 | z1)."""
        param_store.register("encoder", self.encoder)
        param_store.register("upper_encoder", self.upper_encoder)
        loc, scale = self.encoder(x)
        with self.data_plate(x):
            with self._kl_weight():
                z1 = pyro.sample("z1", dist.Normal(loc, scale).to_event(1))
                loc2, scale2 = self.upper_encoder(z1)
                z2 = pyro.sample("z2", dist.Normal(loc2, scale2).to_event(1))
        return z1, z2

    def guide_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.upper_encoder.parameters()]

    @torch.no_grad()
    def sample(self, n: int, like: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z1] for z2 ~ p(z2), z1 ~ p(z1 | z2)."""
        z2 = self.prior().sample((n,))
        loc, scale = self.upper_decoder(z2)
        return self.likelihood.mean(self.decoder(dist.Normal(loc, scale).sample()))


def build_two_layer_vae(
    data_shape: Sequence[int],
    *,
    likelihood: str = "bernoulli",
    prior: str = "normal",
    z_dim: int = 100,
    z2_dim: int = 50,
    hidden: Sequence[int] = (200, 200),
    upper_hidden: Sequence[int] = (100, 100),
    beta: float = 1.0,
    **options: object,
) -> TwoLayerVAE:
    """Burda et al.'s two-layer architecture with MLPs (ReLU rather than their tanh);
    ``options`` go to the likelihood and the prior, whichever takes each."""
    if prior == "vamp":
        raise ValueError("the vamp prior is built from an x -> z encoder; use it with one layer")
    if not hidden or not upper_hidden:
        raise ValueError("two-layer needs at least one hidden layer on each side")
    data_dim = int(torch.Size(data_shape).numel())
    parts = route("two-layer", options, likelihood=likelihood, prior=prior)
    lik = LIKELIHOODS.create(likelihood, data_dim, **parts["likelihood"])
    pri = PRIORS.create(prior, z2_dim, **parts["prior"])
    encoder = MLPEncoder(data_dim, z_dim, hidden)
    if lik.log_input:
        encoder = LogInputEncoder(encoder)
    return TwoLayerVAE(
        encoder,
        MLPDecoder(z_dim, data_dim, hidden, lik.params_per_pixel),
        MLPEncoder(z_dim, z2_dim, upper_hidden),
        MLPEncoder(z2_dim, z_dim, tuple(reversed(upper_hidden))),
        lik,
        pri,
        beta,
    )
