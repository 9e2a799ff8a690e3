"""The figures of a trained model (``RUN_DIR/figures``): loss curves (-ELBO, distortion and
rate, train and test), reconstructions, samples from the prior, the latent map of the test set
by label, a latent traversal grid, interpolations between encoded test images, and
per-dimension KL and activity with the active units marked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..inference import active_units, kl_per_dimension, posterior_means
from ..model import VAE, ConditionalVAE, JointVAE
from ..model.program import PyroProgram
from . import plots

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ACTIVE_THRESHOLD = 0.01

# (file, caption) in the order the report shows them
FIGURES = [
    (
        "loss_curves.png",
        "Loss per epoch: -ELBO (and the objective as optimised), the "
        "reconstruction term (distortion) and the KL term (rate), train and test.",
    ),
    (
        "reconstructions.png",
        "Test images (odd rows) and their reconstructions E[x | z = E_q[z|x]] (even rows).",
    ),
    ("prior_samples.png", "Samples from the model: E[x | z] for z drawn from the prior."),
    (
        "latent_map.png",
        "Latent map: posterior means of the test images coloured by label "
        "(the top two principal components beyond two dimensions).",
    ),
    (
        "latent_traversal.png",
        "Latent traversal: images E[x | z] decoded along a grid of codes spanning the 5% to 95% "
        "quantiles of the test codes E_q[z|x], each column labelled with its z value (a 2-D "
        "grid for two latent dimensions; otherwise one row per most active dimension z_j, "
        "every other dimension held at its median over the test codes).",
    ),
    (
        "interpolation.png",
        "Interpolation: each row decodes the straight line between the codes "
        "of two test images, shown themselves at both ends (framed); the columns between them "
        "are labelled with their weight t on the second code.",
    ),
    (
        "kl_per_dimension.png",
        "Activity Cov_x E[z_j|x] of each latent dimension (active above "
        "0.01, Burda et al. 2016) and, for factorised priors, its KL.",
    ),
]


IMAGE_ONLY = {"latent_traversal.png", "interpolation.png"}


def is_image_shape(shape) -> bool:
    """(C, H, W) data are drawn as images; anything else (feature vectors) as heatmaps."""
    return len(tuple(shape)) == 3


def figure_names(shape: Sequence[int], conditional: bool = False) -> list[str]:
    """The figures :func:`make_figures` draws for data of this shape (traversals and
    interpolations decode codes alone, so not for vectors, conditional models or models with
    a class variable)."""
    image = is_image_shape(shape) and not conditional
    return [name for name, _ in FIGURES if image or name not in IMAGE_ONLY]


@dataclass(frozen=True)
class RowView:
    """How figures show a model's data rows. A conditional model's rows hold the observed
    pixels, then the context (:mod:`pyro_vae.data.context`); the pixels are what the likelihood
    models, and a ``top-half`` row is drawn whole, its context (the upper half) on top."""

    data_dim: int | None = None  # None: the whole row is observed
    top_half: bool = False
    shape: tuple[int, ...] = ()  # the shape figures draw images at

    @classmethod
    def of(cls, vae: VAE, shape: Sequence[int]) -> RowView:
        if not isinstance(vae, ConditionalVAE):  # (M2's rows carry label columns)
            width = int(torch.Size(shape).numel())
            return (
                cls(shape=tuple(shape))
                if vae.row_width == width
                else cls(width, shape=tuple(shape))
            )
        if vae.context != "top-half":
            return cls(vae.data_dim, shape=tuple(shape))
        c, h, w = shape
        return cls(vae.data_dim, True, (c, h + vae.context_dim // (c * w), w))

    def observed(self, x: torch.Tensor) -> torch.Tensor:
        """The part of each row the likelihood models."""
        return x if self.data_dim is None else x[..., : self.data_dim]

    def display(self, x: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """What figures show for rows ``x`` whose observed part is ``pixels``."""
        return torch.cat([x[..., self.data_dim :], pixels], -1) if self.top_half else pixels


def _decoder(vae: VAE) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda z: vae.likelihood.mean(vae.decoder(z))


def _quantile_grid(codes: torch.Tensor, steps: int) -> torch.Tensor:
    """Per dimension, ``steps`` values from the 5% to the 95% quantile of the codes."""
    q = torch.linspace(0.05, 0.95, steps, dtype=codes.dtype, device=codes.device)
    return torch.quantile(codes, q, dim=0)  # (steps, D)


def _z_labels(values: torch.Tensor) -> list[str]:
    return [plots.z_label(v) for v in values.tolist()]


@torch.no_grad()
def traversal(
    vae: VAE,
    codes: torch.Tensor,
    activity: torch.Tensor,
    shape,
    path: Path,
    steps: int = 15,
    max_rows: int = 10,
) -> Figure:
    """Images E[x | z] along ``steps`` values from the 5% to the 95% quantile of the test codes
    ``codes`` (posterior means), each column labelled with the z value it decodes. Two latent
    dimensions: the 2-D grid (z1 across, z2 up). Otherwise one row per most active dimension j
    (at most ``max_rows``): z_j through its own quantiles, every other dimension held at its
    median over ``codes``. Returns the figure."""
    decode = _decoder(vae)
    grid = _quantile_grid(codes, steps)
    quantiles = "5% to 95% quantiles of the test codes E_q[z|x]"
    if codes.shape[1] == 2:
        z1, z2 = grid[:, 0], grid[:, 1].flip(0)  # z2 grows upwards, as on a map
        z = torch.stack(torch.meshgrid(z2, z1, indexing="ij")[::-1], dim=-1).reshape(-1, 2)
        return plots.image_grid(
            decode(z),
            shape,
            steps,
            path,
            f"E[x | z] over a grid of z = (z1, z2): the {quantiles}",
            row_labels=_z_labels(z2),
            col_labels=_z_labels(z1),
            xlabel="z1",
            ylabel="z2",
        )
    order = torch.argsort(activity.to(codes.device), descending=True)[:max_rows]
    centre = codes.median(dim=0).values
    z = centre.repeat(len(order), steps, 1)
    for row, j in enumerate(order.tolist()):
        z[row, :, j] = grid[:, j]
    return plots.image_rows(
        decode(z.reshape(-1, codes.shape[1])),
        shape,
        path,
        "latent traversal: row z_j (the most active dimensions first) decodes z_j at the "
        f"{quantiles},\nits value under each image; every other dimension is held at its "
        "median over the test codes",
        row_labels=[f"z{j + 1}" for j in order.tolist()],  # z1 ... zD, as in the 2-D figures
        col_labels=[_z_labels(grid[:, j]) for j in order.tolist()],
        xlabel="value of z_j",
    )


@torch.no_grad()
def interpolation(
    vae: VAE,
    x: torch.Tensor,
    labels: torch.Tensor,
    shape,
    path: Path,
    steps: int = 8,
    pairs: int = 5,
) -> Figure:
    """Rows: x_a, decoded codes on the segment [m(x_a), m(x_b)], x_b; pairs of classes c, c+1.
    The end columns (the test images themselves) are framed and labelled as originals, the
    others with their weight t on m(x_b). Returns the figure."""
    classes = sorted(set(labels.tolist()))
    firsts = {c: int(torch.nonzero(labels == c)[0]) for c in classes}
    chosen = [(firsts[a], firsts[b]) for a, b in zip(classes[::2], classes[1::2], strict=False)][
        :pairs
    ]
    if not chosen:  # one class only: pair the first images
        chosen = [(i, i + 1) for i in range(0, min(2 * pairs, len(x) - 1), 2)]
    means = posterior_means(vae.code_guide, x[[i for pair in chosen for i in pair]])
    t = torch.linspace(0, 1, steps, device=x.device, dtype=means.dtype).unsqueeze(-1)
    rows = []
    decode = _decoder(vae)
    for k, (a, b) in enumerate(chosen):
        za, zb = means[2 * k], means[2 * k + 1]
        rows += [x[a : a + 1], decode((1 - t) * za + t * zb), x[b : b + 1]]
    weights = [f"t={w:.2f}" for w in t.squeeze(-1).tolist()]
    return plots.image_grid(
        torch.cat(rows),
        shape,
        len(chosen),
        path,
        "interpolation between encoded test images",
        col_labels=["x₁\noriginal", *weights, "x₂\noriginal"],
        xlabel="framed: the test images x₁, x₂; between them E[x | z] for "
        "z = (1 - t) m(x₁) + t m(x₂), m(x) = E_q[z|x]",
        framed=(0, steps + 1),
    )


FIGURE_ROWS = 5000  # the most test rows a figure reads (the latent scatter's)


@torch.no_grad()
def make_figures(
    vae: VAE,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    shape,
    metrics: list[dict[str, float]],
    directory: Path,
    title: str = "",
) -> None:
    """Every figure of :func:`figure_names`, for the model as it is now. Images are drawn as
    images (a conditional model's as its :class:`RowView` composes them); feature vectors as
    heatmaps."""
    vae.eval()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if not isinstance(test_x, torch.Tensor):  # streamed rows: read the ones the figures draw
        test_x, test_y = test_x[:FIGURE_ROWS], test_y[:FIGURE_ROWS]
    if isinstance(vae, PyroProgram):
        _program_figures(vae, test_x, test_y, metrics, directory, title)
    else:
        _vae_figures(vae, test_x, test_y, shape, metrics, directory, title)


def _vae_figures(
    vae: VAE,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    shape,
    metrics: list[dict[str, float]],
    directory: Path,
    title: str,
) -> None:
    image = is_image_shape(shape)
    names = figure_names(shape, conditional=isinstance(vae, (ConditionalVAE, JointVAE)))
    view = RowView.of(vae, shape)
    plots.loss_curves(metrics, directory / "loss_curves.png", title=title)
    device = test_x.device
    inputs = test_x[torch.linspace(0, test_x.shape[0] - 1, 30, device=device).long()]
    recons = vae.reconstruct(inputs)
    if image:
        plots.reconstructions(
            view.display(inputs, view.observed(inputs)),
            view.display(inputs, recons),
            view.shape,
            directory / "reconstructions.png",
        )
    else:
        panels = {"test data": view.observed(inputs), "reconstructions E[x | z = E_q z]": recons}
        plots.feature_heatmaps(panels, directory / "reconstructions.png")
    with torch.random.fork_rng(devices=[device] if test_x.is_cuda else []):
        torch.manual_seed(0)
        if image and isinstance(vae, JointVAE):  # a row per class, z shared down a column
            title = f"samples E[x | {vae.class_site}, z]: a row per class, one z per column"
            images = vae.sample(10 * vae.classes)
            plots.samples(images, view.shape, directory / "prior_samples.png", title=title)
        elif image:
            like = test_x[:100]
            samples = view.display(like, vae.sample(100, like=like))
            plots.samples(samples, view.shape, directory / "prior_samples.png")
        else:
            plots.feature_heatmaps(
                {"samples E[x | z], z ~ p(z)": vae.sample(30, like=test_x[:30])},
                directory / "prior_samples.png",
            )
        x = test_x[:5000]
        codes = posterior_means(vae.code_guide, x)
        n_active, activity = active_units(vae.code_guide, x, ACTIVE_THRESHOLD)
        plots.latent_map(codes, test_y[: len(x)], directory / "latent_map.png")
        if "latent_traversal.png" in names:
            traversal(vae, codes, activity, shape, directory / "latent_traversal.png")
            interpolation(vae, x, test_y[: len(x)], shape, directory / "interpolation.png")
        plots.kl_per_dimension(
            kl_per_dimension(vae.model, vae.code_guide, x),
            activity,
            ACTIVE_THRESHOLD,
            directory / "kl_per_dimension.png",
        )


def _program_figures(
    vae: PyroProgram,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    metrics: list[dict[str, float]],
    directory: Path,
    title: str,
) -> None:
    """A bare model/guide pair's figures: what needs no decoder (the loss curves, the codes
    of q(z|x) and their activity); the rest is left out, saying why."""
    plots.loss_curves(metrics, directory / "loss_curves.png", title=title)
    x = test_x[:5000]
    with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
        torch.manual_seed(0)
        codes = posterior_means(vae.code_guide, x)
        _, activity = active_units(vae.code_guide, x, ACTIVE_THRESHOLD)
        plots.latent_map(codes, test_y[: len(x)], directory / "latent_map.png")
        plots.kl_per_dimension(
            kl_per_dimension(vae.model, vae.code_guide, x),
            activity,
            ACTIVE_THRESHOLD,
            directory / "kl_per_dimension.png",
        )
    logging.getLogger("pyro_vae").warning(
        "figures: reconstructions, prior samples, traversals and interpolations need a "
        "decoder, which a bare model/guide pair does not name: left out"
    )
