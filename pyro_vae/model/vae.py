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

A subclass that rewrites ``model`` or ``guide`` (a user's Student-t prior, say) need not know
any of this: its programs run inside :func:`~pyro_vae.model.latent_scale.scale_latents`, which
weights every latent site by beta, so ``beta=4``, a warm-up or a compiled step's tensor beta
mean for it what they mean for ours. A class that weights its own sites (ours: the class
variable has a beta of its own) says so with ``weights_latents = True``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import nn

from .. import param_store
from .guides import DiagonalGaussian, Guide
from .latent_scale import scale_latents
from .likelihoods import Likelihood
from .priors import Prior


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

    Args:
        encoder: x -> (loc, scale) of q(z|x) (and ``features``/``head`` for richer guides).
        decoder: z -> the likelihood's parameters (for ``bernoulli``: logits).
        likelihood: decoder output -> p(x|z).
        prior: p(z).
        beta: weight of the KL term; may be changed between steps (KL warm-up).
        q: the guide's family (:mod:`pyro_vae.model.guides`); diagonal Gaussian if None.
    """

    # whether this class's own model and guide weight their latent sites by beta; a subclass
    # that rewrites either without saying so has them weighted by the handler (module doc)
    weights_latents: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "weights_latents" not in vars(cls):
            cls.weights_latents = False
        if not cls.weights_latents:
            for name in ("model", "guide"):
                if name in vars(cls):
                    setattr(cls, name, _weighting_latents(vars(cls)[name]))

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        likelihood: Likelihood,
        prior: Prior,
        beta: float = 1.0,
        q: Guide | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.prior = prior
        self.q = DiagonalGaussian(prior.z_dim) if q is None else q
        self.beta = beta
        self._beta_override: torch.Tensor | None = None
        self._latents_weighted = False  # inside a handler that weights them (module doc)
        self._register_load_state_dict_pre_hook(_rename_posterior)

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

    @property
    def row_width(self) -> int:
        """Values per data row: the pixels (and a conditional model's context after them)."""
        return self.likelihood.data_dim

    def data_plate(self, x: torch.Tensor) -> pyro.plate:
        """``pyro.plate("data")`` over the rows of ``x``, checked to be a batch of this model's
        rows: a single image, or images of another size, is a clear error, not a wrong
        plate."""
        self.check_rows(x)
        return pyro.plate("data", x.shape[0])

    def check_rows(self, x: torch.Tensor) -> None:
        """Raise ValueError unless ``x`` is a batch of this model's rows."""
        if x.dim() != 2 or x.shape[1] != self.row_width:
            hint = " (one image? give x.reshape(1, -1))" if x.dim() == 1 else ""
            raise ValueError(
                f"the model takes a batch of rows of shape (N, {self.row_width}); "
                f"got shape {tuple(x.shape)}{hint}"
            )

    def current_beta(self) -> float | torch.Tensor:
        """beta as the next trace sees it: the compiled step's tensor within
        :meth:`beta_tensor`, else :attr:`beta`."""
        return self.beta if self._beta_override is None else self._beta_override

    def _kl_weight(self) -> contextlib.AbstractContextManager:
        if self._latents_weighted:  # a rewritten program calling ours: weighted once, outside
            return contextlib.nullcontext()
        return kl_weight(self.current_beta())

    def model(self, x: torch.Tensor) -> torch.Tensor:
        """p(x, z) = p(z) p(x | z), one z per image."""
        for name in ("decoder", "prior", "likelihood"):
            param_store.register(name, getattr(self, name))
        with self.data_plate(x):
            with self._kl_weight():
                z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(self.decoder(z), x), obs=x)
        return z

    def guide(self, x: torch.Tensor) -> torch.Tensor:
        """q(z | x), amortised by the encoder (diagonal Gaussian unless another guide)."""
        param_store.register("encoder", self.encoder)
        param_store.register("q", self.q)
        q = self.q(self.encoder, x)
        with self.data_plate(x):
            with self._kl_weight():
                return pyro.sample("z", q)

    def runs_user_code(self) -> bool:
        """Whether ``model`` or ``guide`` is code from outside the package (a subclass that
        rewrote one): no hand-written loss exists for it, and its structure is checked."""
        return any(
            getattr(getattr(type(self), name), "__module__", "").split(".")[0] != "pyro_vae"
            for name in ("model", "guide")
        )

    def guide_parameters(self) -> list[nn.Parameter]:
        """The variational parameters phi: the encoder's and the guide family's own."""
        return [*self.encoder.parameters(), *self.q.parameters()]

    def code_guide(self, x: torch.Tensor):
        """The guide whose first latent site holds the codes z that figures and latent
        statistics (active units, KL per dimension) read: the guide itself for a VAE."""
        return self.guide(x)

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

    @torch.no_grad()
    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x) for a batch of rows: the distribution the guide draws its first latent site
        from (batch shape (N,), event shape (z_dim,)). Two layers: q(z1 | x); the autoencoder:
        its point mass. The guide runs once, so this draws one z."""
        self.data_plate(x)  # a batch of the wrong shape fails here, not inside the trace
        with param_store.off():
            trace = poutine.trace(self.guide).get_trace(x)
        return next(
            site["fn"]
            for site in trace.nodes.values()
            if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
        )

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """E_q[z | x], the posterior mean, shape (N, z_dim): the encoder's loc(x) for the
        diagonal and low-rank guides. A flow guide (``iaf``) has no closed-form mean: that is
        an error that names the Monte Carlo alternative."""
        q = self.posterior(x)
        try:
            return q.mean
        except NotImplementedError:
            raise ValueError(
                f"this guide's q(z|x) ({type(q).__name__}) has no closed-form mean: average "
                "draws of vae.posterior(x), or use pyro_vae.posterior_means(vae.guide, x)"
            ) from None

    @torch.no_grad()
    def decode(self, z: torch.Tensor, kind: str = "mean") -> torch.Tensor | dist.TorchDistribution:
        """p(x | z) for codes z of shape (..., z_dim): ``kind="mean"`` gives E[x | z] (the pixel
        probabilities for ``bernoulli``), ``"params"`` the decoder's raw output (the
        likelihood's parameters: logits for ``bernoulli``), ``"distribution"`` p(x | z)
        itself. Count likelihoods with ``library="observed"`` see no library size here: their
        mean is the proportions."""
        if z.shape[-1] != self.z_dim:
            raise ValueError(f"z must have shape (..., {self.z_dim}), got {tuple(z.shape)}")
        return self._decoded(self.decoder(z), kind)

    def _decoded(self, out: torch.Tensor, kind: str) -> torch.Tensor | dist.TorchDistribution:
        """The decoder's output ``out`` as :meth:`decode`'s ``kind`` asks."""
        if kind == "params":
            return out
        if kind == "mean":
            return self.likelihood.mean(out)
        if kind == "distribution":
            return self.likelihood(out)
        raise ValueError(f"kind must be 'mean', 'params' or 'distribution', got {kind!r}")


def _weighting_latents(program: Callable) -> Callable:
    """``program`` (a subclass's model or guide) run with its latent sites weighted by beta;
    a call nested in another (``super().model(x)``) is weighted once, by the outer one."""

    @functools.wraps(program)
    def weighted(self: VAE, *args: Any, **kwargs: Any) -> Any:
        if self._latents_weighted:
            return program(self, *args, **kwargs)
        self._latents_weighted = True
        try:
            with scale_latents(self.current_beta()):
                return program(self, *args, **kwargs)
        finally:
            self._latents_weighted = False

    weighted.weights_latents = True  # type: ignore[attr-defined]
    return weighted


def _rename_posterior(state_dict, prefix, *args) -> None:
    """Checkpoints written before 0.2 kept the guide family under ``posterior.``."""
    for key in [k for k in state_dict if k.startswith(prefix + "posterior.")]:
        state_dict[prefix + "q." + key[len(prefix + "posterior.") :]] = state_dict.pop(key)


class Autoencoder(VAE):
    """The same networks made deterministic: z = loc(x), and the objective is the
    reconstruction term -log p(x | z = loc(x)) alone.

    As a Pyro program the guide puts a point mass (``Delta``) at the encoder's mean and the
    model's prior is masked out (beta is fixed at 0), so every estimator's loss is the
    reconstruction term. Decoding random codes z ~ p(z) shows what a plain autoencoder lacks.
    """

    weights_latents = True
    beta = property(lambda self: 0.0, lambda self, value: None)  # no KL term, ever

    def _kl_weight(self) -> contextlib.AbstractContextManager:
        return kl_weight(0.0)

    def guide(self, x: torch.Tensor) -> torch.Tensor:
        param_store.register("encoder", self.encoder)
        loc, _ = self.encoder(x)
        with self.data_plate(x):
            with self._kl_weight():
                return pyro.sample("z", dist.Delta(loc).to_event(1))
