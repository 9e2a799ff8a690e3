"""Conditional VAEs (Sohn et al., 2015): p(x | z, c) and q(z | x, c) for a context c.

    model:  z ~ p(z),  x ~ p(x | decoder([z, c]))          (in plate "data")
    guide:  z ~ q(z | encoder([x, c]))

Contexts: ``label`` (the one-hot class: generate a chosen digit, and a latent space free to
hold style) or ``top-half`` (the upper half of the image: complete the lower half). Each data
row carries the observed pixels followed by the context (:mod:`pyro_vae.data.context`), so the
model and guide keep the one-argument signature every estimator, evaluator and the trainer
use; log p(x) measured on such a model is the conditional log p(x | c). ``build_vae`` builds
one when given a ``context``.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from .. import param_store
from .vae import VAE


def class_grid(prior: dist.Distribution, n: int, classes: int):
    """(z, one-hot class) for n samples drawn as a grid: the classes in turn, n / classes of
    each, the same codes z ~ p(z) for every class (a row per class, a column per code); the
    last class takes what is left over."""
    per_class = max(1, n // classes)
    codes = prior.sample((per_class,))
    index = torch.arange(n, device=codes.device)
    labels = (index // per_class).clamp(max=classes - 1)
    return codes[index % per_class], F.one_hot(labels, classes).to(codes.dtype)


class ConditionalVAE(VAE):
    """A VAE whose decoder reads [z, c] and whose encoder reads [x, c] (see the module doc)."""

    weights_latents = True  # its model and guide weight their own sites

    def __init__(self, *args, data_dim: int, context_dim: int, context: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.data_dim, self.context_dim, self.context = data_dim, context_dim, context

    @property
    def row_width(self) -> int:
        return self.data_dim + self.context_dim

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(observed pixels, context) of each row."""
        return x[..., : self.data_dim], x[..., self.data_dim :]

    def decoder_output(self, z: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The decoder's output for codes z and context rows c: the likelihood's parameters."""
        context = context.expand(*z.shape[:-1], self.context_dim)  # particle dims in front
        return self.decoder(torch.cat([z, context], -1))

    def model(self, x: torch.Tensor) -> torch.Tensor:
        """p(x, z | c) = p(z) p(x | z, c)."""
        for name in ("decoder", "prior", "likelihood"):
            param_store.register(name, getattr(self, name))
        pixels, context = self.split(x)
        with self.data_plate(x):
            with self._kl_weight():
                z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(self.decoder_output(z, context), pixels), obs=pixels)
        return z

    @torch.no_grad()
    def decode(
        self, z: torch.Tensor, context: torch.Tensor, kind: str = "mean"
    ) -> torch.Tensor | dist.TorchDistribution:
        """p(x | z, c) for codes z and context rows c (one per code, or one for all), as
        :meth:`VAE.decode` gives p(x | z): ``kind`` is "mean", "params" or "distribution"."""
        return self._decoded(self.decoder_output(z, context), kind)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        loc, _ = self.encoder(x)
        pixels, context = self.split(x)
        return self.likelihood.mean(self.decoder_output(loc, context), pixels)

    @torch.no_grad()
    def sample(self, n: int, like: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z, c] for z ~ p(z). With ``label``: the classes in turn, n / classes of each,
        the same codes for every class (a row per class, a column per code: style fixed along
        a column); otherwise c is the context of the first n rows of ``like``."""
        if self.context == "label":
            z, context = class_grid(self.prior(), n, self.context_dim)
            return self.likelihood.mean(self.decoder_output(z, context))
        z = self.prior().sample((n,))
        if like is None:
            raise ValueError(f"sampling a {self.context} model needs contexts: pass like=")
        context = self.split(like[:n])[1]
        return self.likelihood.mean(self.decoder_output(z, context))
