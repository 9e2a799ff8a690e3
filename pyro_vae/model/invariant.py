"""The invariant VAE: image content apart from rotation and translation (spatial-VAE, Bepler
et al., 2019, "Explicitly disentangling image content from translation and rotation with
spatial-VAE", NeurIPS; the iVAE of pyroVED).

The decoder is a function of pixel coordinates. Each pixel i has a coordinate c_i on the
grid [-1, 1]^2 (x along the columns, left to right; y along the rows, top to bottom; pixel
centres on ``linspace(-1, 1, n)``, the convention of :mod:`pyro_vae.data.rotated`). For one
image, in ``plate("data")``:

    z ~ N(0, I)                    content            (site "z", z_dim)
    theta ~ N(0, theta_prior^2)    rotation, radians  (site "theta", 1)
    dx ~ N(0, dx_prior^2 I_2)      translation        (site "dx", 2)
    c'_i = R(theta) c_i + dx,      R(theta) = [[cos, -sin], [sin, cos]]
    x_i ~ p(x_i | f(c'_i, z))      f an MLP, one output per pixel (e.g. Bernoulli logits)

so the image at pose (theta, dx) is the canonical image (theta = 0, dx = 0) read at the moved
coordinates: the rotation of :func:`pyro_vae.data.rotated.rotate_images` by theta
(counter-clockwise as displayed), and dx = (+2/(W-1), 0) shifts the picture one pixel left.
The first layer is W_c c'_i + W_z z + b: W_z z is computed once per image, not once per pixel
(the paper's decoder). Either pose variable can be left out (``invariances``): without both
the model is a VAE whose decoder still reads coordinates.

The guide is an MLP encoder of the image giving a diagonal Gaussian for each site
(q(z|x) q(theta|x) q(dx|x)); beta weights all three latent sites in model and guide alike.

Priors. theta_prior = pi by default, spatial-VAE's value for digits rotated by up to +-pi: the
prior then costs at most 1/2 nat more at |theta| = pi than at 0, so no orientation is ruled
out. dx_prior = 0.1 (spatial-VAE's): a tenth of the half-width, about 1.4 pixels at 28 x 28.

``rotations = R`` (>= 2) adds a discrete rotation r among R turns 2 pi r / R, enumerated, and
theta becomes the offset from it (prior sd pi / R by default):
:mod:`pyro_vae.model.rotation_search`. With R = 0 (the default) the angle is one Gaussian.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from .. import param_store
from .likelihoods import LIKELIHOODS, Likelihood
from .nets import LogInputEncoder, MLPEncoder
from .option_routing import route
from .priors import PRIORS, Prior
from .rotation_search import RotationSearchEncoder, at_rotation, wrapped
from .vae import VAE

INVARIANCES = ("rotation", "translation")
# the command line's spelling of ``invariances`` (one string)
INVARIANCE_CHOICES = ("rotation+translation", "rotation", "translation", "none")
POSE_SITES = {"rotation": ("theta", 1), "translation": ("dx", 2)}


def pixel_grid(side: int) -> torch.Tensor:
    """The coordinates c_i = (x, y) of a side x side image's pixels in row-major order, shape
    (side^2, 2); x is the column, y the row, each on linspace(-1, 1, side)."""
    ticks = torch.linspace(-1.0, 1.0, side)
    rows, cols = torch.meshgrid(ticks, ticks, indexing="ij")
    return torch.stack([cols, rows], -1).reshape(-1, 2)


def transform_coordinates(
    grid: torch.Tensor, theta: torch.Tensor | None, dx: torch.Tensor | None
) -> torch.Tensor:
    """c' = R(theta) c + dx for every point of ``grid`` (P, 2); theta (..., 1) and dx (..., 2)
    may be None (no rotation, no shift). Shape (..., P, 2), or (P, 2) for neither."""
    x, y = grid[:, 0], grid[:, 1]
    if theta is not None:
        cos, sin = torch.cos(theta), torch.sin(theta)  # (..., 1): broadcast over the points
        x, y = cos * x - sin * y, sin * x + cos * y
    if dx is not None:
        x, y = x + dx[..., :1], y + dx[..., 1:]
    return torch.stack(torch.broadcast_tensors(x, y), -1)


class SpatialDecoder(nn.Module):
    """f(c', z): an MLP of the transformed coordinates and the code, one value per pixel.

    Layer 1 is W_c c'_i + W_z z + b (``coord``, ``latent``), then tanh and the ``body``
    (Linear/tanh, ending in one output); tanh is spatial-VAE's choice, and keeps the images
    smooth functions of the coordinates.
    """

    def __init__(self, side: int, z_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("the invariant decoder needs at least one hidden layer")
        self.side = side
        self.register_buffer("grid", pixel_grid(side), persistent=False)  # derived from side
        self.coord = nn.Linear(2, hidden[0])
        self.latent = nn.Linear(z_dim, hidden[0], bias=False)
        layers: list[nn.Module] = [nn.Tanh()]
        for n_in, n_out in zip(hidden[:-1], hidden[1:], strict=True):
            layers += [nn.Linear(n_in, n_out), nn.Tanh()]
        self.body = nn.Sequential(*layers, nn.Linear(hidden[-1], 1))

    def forward(
        self, z: torch.Tensor, theta: torch.Tensor | None = None, dx: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The likelihood's parameters for every pixel: shape (..., side^2)."""
        coords = transform_coordinates(self.grid, theta, dx)  # (..., P, 2)
        h = self.coord(coords) + self.latent(z).unsqueeze(-2)  # (..., P, hidden[0])
        return self.body(h).squeeze(-1)


class InvariantVAE(VAE):
    """Content z apart from pose (theta, dx); see the module doc. ``encoder`` emits (loc,
    scale) of [z, theta, dx] (the sites in use, in that order)."""

    weights_latents = True  # its model and guide weight their own sites

    def __init__(
        self,
        encoder: nn.Module,
        decoder: SpatialDecoder,
        likelihood: Likelihood,
        prior: Prior,
        *,
        invariances: Sequence[str] = INVARIANCES,
        theta_prior: float = math.pi,
        dx_prior: float = 0.1,
        beta: float = 1.0,
        rotations: int = 0,
    ) -> None:
        super().__init__(encoder, decoder, likelihood, prior, beta=beta)
        for name, scale in (("theta_prior", theta_prior), ("dx_prior", dx_prior)):
            if not (math.isfinite(scale) and scale > 0):
                raise ValueError(f"{name} must be a finite scale > 0, got {scale}")
        self.invariances = parse_invariances(invariances)
        self.theta_prior = float(theta_prior)
        self.dx_prior = float(dx_prior)
        self.rotations = rotations
        if rotations and "rotation" not in self.invariances:
            raise ValueError("a search over rotations needs the rotation invariance")
        if bool(rotations) != isinstance(encoder, RotationSearchEncoder):
            raise ValueError("rotations > 0 goes with a RotationSearchEncoder, and only then")

    @property
    def latent_sites(self) -> tuple[str, ...]:
        turn = ("r",) if self.rotations else ()
        return (*turn, "z", *(POSE_SITES[i][0] for i in self.invariances))

    def site_sizes(self) -> dict[str, int]:
        """Each latent site's size, in the encoder's output order."""
        return {"z": self.z_dim, **dict(POSE_SITES[i] for i in self.invariances)}

    def prior_scales(self) -> dict[str, float]:
        return {"z": 1.0, "theta": self.theta_prior, "dx": self.dx_prior}

    def _encoded(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor | None, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """The logits of q(r | x), (N, R) (None without the search over rotations), and the
        (loc, scale) of q(site | x) for every other latent site: (N, size), or (R, N, size),
        one per turn r, with the search."""
        if self.rotations:
            logits, loc, scale = self.encoder(x)
        else:
            logits, (loc, scale) = None, self.encoder(x)
        sizes = list(self.site_sizes().values())
        locs, scales = loc.split(sizes, -1), scale.split(sizes, -1)
        parts = {s: (m, sd) for s, m, sd in zip(self.site_sizes(), locs, scales, strict=True)}
        return logits, parts

    def _posterior_parts(self, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """(loc, scale) of q(site | x), (N, size), for every continuous site: with the search
        over rotations, at each image's most probable turn r under q(r | x), and theta's loc
        the whole angle phi_r + theta."""
        logits, parts = self._encoded(x)
        if logits is None:
            return parts
        best = logits.argmax(-1)
        parts = at_rotation(parts, best)
        loc, scale = parts["theta"]
        return parts | {"theta": (self._angle(best, loc), scale)}

    def _angle(self, r: torch.Tensor | None, theta: torch.Tensor | None) -> torch.Tensor | None:
        """The rotation the decoder applies: phi_r + theta with the search, else theta."""
        if r is None or theta is None:
            return theta
        return self.encoder.angles(theta)[r].unsqueeze(-1) + theta

    def model(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """p(x, z, theta, dx) = p(z) p(theta) p(dx) prod_i p(x_i | f(R(theta) c_i + dx, z));
        with the search over rotations also p(r) = Cat(1/R), and the angle is phi_r + theta."""
        for name in ("decoder", "prior", "likelihood"):
            param_store.register(name, getattr(self, name))
        values: dict[str, torch.Tensor | None] = {"theta": None, "dx": None}
        r = None
        with self.data_plate(x):
            with self._kl_weight():
                if self.rotations:
                    r = pyro.sample("r", dist.Categorical(logits=x.new_zeros(self.rotations)))
                z = pyro.sample("z", self.prior())
                for site, size in self.site_sizes().items():
                    if site != "z":
                        p = dist.Normal(x.new_zeros(size), self.prior_scales()[site])
                        values[site] = pyro.sample(site, p.to_event(1))
            theta = self._angle(r, values["theta"])
            out = self.decoder(z, theta, values["dx"])
            pyro.sample("x", self.likelihood(out, x), obs=x)
        return z, theta, values["dx"]

    def guide(self, x: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """q(z, theta, dx | x) = q(z|x) q(theta|x) q(dx|x), each a diagonal Gaussian; returns
        the sample (z, theta, dx), None for a pose variable not in use. With the search over
        rotations, q(r | x) q(z, theta, dx | x, r), r marked for parallel enumeration; theta is
        then the offset from phi_r, and each sample has r's dimension first when enumerated."""
        param_store.register("encoder", self.encoder)
        logits, parts = self._encoded(x)
        values: dict[str, torch.Tensor | None] = {"theta": None, "dx": None}
        with self.data_plate(x):
            with self._kl_weight():
                if logits is not None:
                    r = pyro.sample(
                        "r", dist.Categorical(logits=logits), infer={"enumerate": "parallel"}
                    )
                    parts = at_rotation(parts, r)
                for site, (loc, scale) in parts.items():
                    values[site] = pyro.sample(site, dist.Normal(loc, scale).to_event(1))
        return values["z"], values["theta"], values["dx"]

    def guide_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def code_guide(self, x: torch.Tensor) -> torch.Tensor:
        """The guide whose first latent site is the content z (figures, latent statistics):
        the guide itself, or with the search over rotations z ~ q(z | x, r) at each image's
        most probable turn."""
        if not self.rotations:
            return self.guide(x)
        param_store.register("encoder", self.encoder)
        loc, scale = self._posterior_parts(x)["z"]
        with self.data_plate(x):
            with self._kl_weight():
                return pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """E_q[z | x], the content code's posterior mean, shape (N, z_dim) (with the search over
        rotations: at the most probable turn)."""
        self.data_plate(x)
        return self._posterior_parts(x)["z"][0]

    @torch.no_grad()
    def pose(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior mean pose: angle (N,) in radians and translation (N, 2); zeros for an
        invariance the model leaves out."""
        self.data_plate(x)
        parts = self._posterior_parts(x)
        theta = parts["theta"][0][:, 0] if "theta" in parts else x.new_zeros(x.shape[0])
        if self.rotations:
            theta = wrapped(theta)
        dx = parts["dx"][0] if "dx" in parts else x.new_zeros(x.shape[0], 2)
        return theta, dx

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z, theta, dx] at the posterior means: the image redrawn in its own pose."""
        self.data_plate(x)
        parts = self._posterior_parts(x)
        theta, dx = (parts[s][0] if s in parts else None for s in ("theta", "dx"))
        return self.likelihood.mean(self.decoder(parts["z"][0], theta, dx), x)

    @torch.no_grad()
    def sample(
        self, n: int, like: torch.Tensor | None = None, *, canonical: bool = False
    ) -> torch.Tensor:
        """E[x | z, theta, dx] for n draws of the prior (``canonical``: at theta = 0, dx = 0)."""
        z = self.prior().sample((n,))
        pose: dict[str, torch.Tensor | None] = {"theta": None, "dx": None}
        if not canonical:
            for site, size in self.site_sizes().items():
                if site != "z":
                    pose[site] = torch.randn(n, size, dtype=z.dtype, device=z.device)
                    pose[site] = pose[site] * self.prior_scales()[site]
            if self.rotations:
                r = torch.randint(self.rotations, (n,), device=z.device)
                pose["theta"] = self._angle(r, pose["theta"])
        return self.likelihood.mean(self.decoder(z, pose["theta"], pose["dx"]))

    @torch.no_grad()
    def decode(
        self,
        z: torch.Tensor,
        theta: torch.Tensor | float = 0.0,
        dx: torch.Tensor | Sequence[float] | float = 0.0,
        kind: str = "mean",
    ) -> torch.Tensor | dist.TorchDistribution:
        """p(x | z, theta, dx) for codes z (..., z_dim) at the pose theta (radians: a number,
        or one per code) and dx (a number, a pair, or one pair per code); ``kind`` as in
        :meth:`VAE.decode`. The pose applies whether or not the model infers it."""
        if z.shape[-1] != self.z_dim:
            raise ValueError(f"z must have shape (..., {self.z_dim}), got {tuple(z.shape)}")
        batch = z.shape[:-1]
        theta = torch.as_tensor(theta, dtype=z.dtype, device=z.device)
        theta = (theta if theta.shape[-1:] == (1,) else theta.unsqueeze(-1)).expand(*batch, 1)
        dx = torch.as_tensor(dx, dtype=z.dtype, device=z.device)
        dx = dx.unsqueeze(-1).expand(*batch, 2) if dx.shape[-1:] != (2,) else dx.expand(*batch, 2)
        return self._decoded(self.decoder(z, theta, dx), kind)


def parse_invariances(invariances: str | Sequence[str]) -> tuple[str, ...]:
    """The invariances in canonical order, from a sequence of names or one string
    ("rotation+translation", "rotation", "translation", "none")."""
    if isinstance(invariances, str):
        names = [] if invariances == "none" else [n for n in invariances.split("+") if n]
    else:
        names = list(invariances)
    unknown = [n for n in names if n not in INVARIANCES]
    if unknown:
        raise ValueError(
            f"unknown invariance {unknown[0]!r}; choose from {', '.join(INVARIANCES)} "
            f"(or one of {', '.join(INVARIANCE_CHOICES)})"
        )
    return tuple(n for n in INVARIANCES if n in names)


def _image_side(data_shape: Sequence[int]) -> int:
    """The side of a square single-channel image shape, (1, H, H) or (H, H)."""
    shape = tuple(data_shape)
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(
            f"the invariant VAE takes square single-channel images, shape (1, H, H); got "
            f"{tuple(data_shape)}"
        )
    return shape[0]


def build_invariant_vae(
    data_shape: Sequence[int],
    *,
    likelihood: str = "bernoulli",
    prior: str = "normal",
    z_dim: int = 2,
    hidden: Sequence[int] = (512, 512),
    invariances: str | Sequence[str] = INVARIANCES,
    theta_prior: float | None = None,
    dx_prior: float = 0.1,
    beta: float = 1.0,
    rotations: int = 0,
    **options: object,
) -> InvariantVAE:
    """The spatial-VAE architecture: an MLP encoder with ``hidden`` layers and a coordinate
    decoder with the same layers mirrored (:class:`SpatialDecoder`); ``options`` go to the
    likelihood. Only one-output-per-pixel likelihoods fit the coordinate decoder.
    ``rotations`` R >= 2 searches R turns (:mod:`pyro_vae.model.rotation_search`);
    ``theta_prior`` defaults to pi, or pi / R with the search."""
    side = _image_side(data_shape)
    if prior != "normal":
        raise ValueError(f"the invariant VAE has the normal prior on z, not {prior!r}")
    if not hidden:
        raise ValueError("the invariant VAE needs at least one hidden layer")
    parts = route("invariant", options, likelihood=likelihood)
    lik = LIKELIHOODS.create(likelihood, side * side, **parts["likelihood"])
    if lik.params_per_pixel != 1:
        raise ValueError(
            f"the invariant decoder emits one value per pixel, and the {likelihood} likelihood "
            f"needs {lik.params_per_pixel}: choose bernoulli, continuous-bernoulli, gaussian, ..."
        )
    if theta_prior is None:
        theta_prior = math.pi / rotations if rotations else math.pi
    chosen = parse_invariances(invariances)
    pose_dim = sum(POSE_SITES[i][1] for i in chosen)
    encoder = MLPEncoder(side * side, z_dim + pose_dim, hidden)
    if lik.log_input:
        encoder = LogInputEncoder(encoder)
    if rotations:
        encoder = RotationSearchEncoder(encoder, rotations, side)
    decoder = SpatialDecoder(side, z_dim, tuple(reversed(hidden)))
    return InvariantVAE(
        encoder,
        decoder,
        lik,
        PRIORS.create("normal", z_dim),
        invariances=chosen,
        theta_prior=theta_prior,
        dx_prior=dx_prior,
        beta=beta,
        rotations=rotations,
    )
