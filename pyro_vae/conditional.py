"""Conditional VAEs (Sohn et al., 2015): p(x | z, c) and q(z | x, c) for a context c.

    model:  z ~ p(z),  x ~ p(x | decoder([z, c]))          (in plate "data")
    guide:  z ~ q(z | encoder([x, c]))

Contexts: ``label`` (the one-hot class: generate a chosen digit, and a latent space free to
hold style) or ``top-half`` (the upper half of the image: complete the lower half). Each data
row carries the observed pixels followed by the context, so the model and guide keep the
one-argument signature every estimator, evaluator and the trainer use; log p(x) measured on
such a model is the conditional log p(x | c).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pyro
import torch
import torch.nn.functional as F

from .data import ImageData
from .guides import build_guide
from .likelihoods import LIKELIHOODS
from .model import VAE, LogInputEncoder
from .nets import MLPDecoder, MLPEncoder
from .priors import PRIORS

CONTEXTS = ("none", "label", "top-half")


def with_context(data: ImageData, context: str) -> ImageData:
    """``data`` with each row's context appended (unchanged for "none" or when present)."""
    if context not in CONTEXTS:
        raise ValueError(f"unknown context {context!r}; choose one of: {', '.join(CONTEXTS)}")
    if context == "none" or data.context == context:
        return data
    if data.context != "none":
        raise ValueError(f"data already carry the context {data.context!r}")
    if context == "label":
        classes = int(max(data.train_y.max(), data.test_y.max())) + 1

        def add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return torch.cat([x, F.one_hot(y.long(), classes).to(x.dtype)], -1)

        return dataclasses.replace(
            data,
            train_x=add(data.train_x, data.train_y),
            test_x=add(data.test_x, data.test_y),
            context=context,
            context_dim=classes,
        )
    if len(data.shape) != 3:
        raise ValueError(f"top-half needs images (C, H, W); the data have shape {data.shape}")
    c, h, w = data.shape
    top = h // 2

    def split(x: torch.Tensor) -> torch.Tensor:
        images = x.reshape(-1, c, h, w)
        upper, lower = images[:, :, :top], images[:, :, top:]
        return torch.cat([lower.flatten(1), upper.flatten(1)], -1)

    return dataclasses.replace(
        data,
        train_x=split(data.train_x),
        test_x=split(data.test_x),
        shape=(c, h - top, w),
        context=context,
        context_dim=c * top * w,
    )


class ConditionalVAE(VAE):
    """A VAE whose decoder reads [z, c] and whose encoder reads [x, c] (see the module doc)."""

    conditional = True

    def __init__(self, *args, data_dim: int, context_dim: int, context: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.data_dim, self.context_dim, self.context = data_dim, context_dim, context

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(observed pixels, context) of each row."""
        return x[..., : self.data_dim], x[..., self.data_dim :]

    def decode(self, z: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        context = context.expand(*z.shape[:-1], self.context_dim)  # particle dims in front
        return self.decoder(torch.cat([z, context], -1))

    def model(self, x: torch.Tensor) -> torch.Tensor:
        """p(x, z | c) = p(z) p(x | z, c)."""
        self._register("decoder", self.decoder)
        self._register("prior", self.prior)
        self._register("likelihood", self.likelihood)
        pixels, context = self.split(x)
        with pyro.plate("data", x.shape[0]):
            with self._kl_weight():
                z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(self.decode(z, context), pixels), obs=pixels)
        return z

    def observed(self, x: torch.Tensor) -> torch.Tensor:
        return self.split(x)[0]

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        loc, _ = self.encoder(x)
        pixels, context = self.split(x)
        return self.likelihood.mean(self.decode(loc, context), pixels)

    @torch.no_grad()
    def sample(self, n: int, like: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z, c] for z ~ p(z). With ``label``: the classes in turn, n / classes of each,
        the same codes for every class (a row per class, a column per code: style fixed along
        a column); otherwise c is the context of the first n rows of ``like``."""
        if self.context == "label":
            per_class = max(1, n // self.context_dim)
            codes = self.prior().sample((per_class,))
            index = torch.arange(n, device=codes.device)
            labels = (index // per_class).clamp(max=self.context_dim - 1)
            context = F.one_hot(labels, self.context_dim).to(codes.dtype)
            return self.likelihood.mean(self.decode(codes[index % per_class], context))
        z = self.prior().sample((n,))
        if like is None:
            raise ValueError(f"sampling a {self.context} model needs contexts: pass like=")
        else:
            context = self.split(like[:n])[1]
        return self.likelihood.mean(self.decode(z, context))

    def display(self, x: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """Images to show for rows x whose observed part is ``pixels``: the whole image
        (context on top) for ``top-half``, the pixels for ``label``."""
        if self.context == "top-half":
            return torch.cat([self.split(x)[1], pixels], -1)
        return pixels

    def display_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        if self.context == "top-half":
            c, h, w = shape
            return (c, h + self.context_dim // (c * w), w)
        return tuple(shape)


def build_conditional_vae(
    data_shape: Sequence[int],
    *,
    context: str,
    context_dim: int,
    network: str = "mlp",
    hidden: Sequence[int] = (400,),
    likelihood: str = "bernoulli",
    prior: str = "normal",
    z_dim: int = 16,
    beta: float = 1.0,
    guide: str = "diagonal",
    **options: object,
) -> ConditionalVAE:
    """MLPs with the context appended to the encoder's input and to the decoder's code."""
    if network != "mlp":
        raise ValueError("conditional models use --network mlp (the context is a flat vector)")
    data_dim = int(torch.Size(data_shape).numel())
    lik = LIKELIHOODS.create(likelihood, data_dim, **options)
    encoder = MLPEncoder(data_dim + context_dim, z_dim, hidden)
    decoder = MLPDecoder(z_dim + context_dim, data_dim, hidden, lik.params_per_pixel)
    if lik.log_input:
        encoder = LogInputEncoder(encoder)
    pri = PRIORS.create(prior, z_dim, data_dim=data_dim + context_dim, **options)
    pri.attach(encoder)
    return ConditionalVAE(
        encoder,
        decoder,
        lik,
        pri,
        beta=beta,
        posterior=build_guide(guide, z_dim, encoder, **options),
        data_dim=data_dim,
        context_dim=context_dim,
        context=context,
    )
