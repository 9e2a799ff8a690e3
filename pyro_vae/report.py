"""Figures of a trained model and the one-file HTML report of a run.

Figures (``RUN_DIR/figures``): loss curves (-ELBO, distortion and rate, train and test),
reconstructions, samples from the prior, the latent map of the test set by label, a latent
traversal grid, interpolations between encoded test images, and per-dimension KL and activity
with the active units marked. ``write_report`` embeds them, the config and the metrics in
``RUN_DIR/report.html``, a single self-contained file.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Callable
from pathlib import Path

import torch

from . import plots, runs
from .evaluation import active_units, kl_per_dimension, posterior_means
from .model import VAE

REPORT = "report.html"
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
        "Latent traversal: images decoded along a grid of codes spanning "
        "5% to 95% of the test codes (a 2-D grid for two latent dimensions; otherwise one row per "
        "most active dimension, the others held at their median).",
    ),
    (
        "interpolation.png",
        "Interpolation: each row decodes the straight line between the codes "
        "of two test images (shown at both ends).",
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


def figure_names(shape, conditional: bool = False) -> list[str]:
    """The figures :func:`make_figures` draws for data of this shape (traversals and
    interpolations decode codes alone, so not for vectors or conditional models)."""
    image = is_image_shape(shape) and not conditional
    return [name for name, _ in FIGURES if image or name not in IMAGE_ONLY]


def _decoder(vae: VAE) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda z: vae.likelihood.mean(vae.decoder(z))


def _quantile_grid(codes: torch.Tensor, steps: int) -> torch.Tensor:
    """Per dimension, ``steps`` values from the 5% to the 95% quantile of the codes."""
    q = torch.linspace(0.05, 0.95, steps, dtype=codes.dtype, device=codes.device)
    return torch.quantile(codes, q, dim=0)  # (steps, D)


@torch.no_grad()
def traversal(
    vae: VAE,
    codes: torch.Tensor,
    activity: torch.Tensor,
    shape,
    path: Path,
    steps: int = 15,
    max_rows: int = 10,
) -> None:
    decode = _decoder(vae)
    grid = _quantile_grid(codes, steps)
    if codes.shape[1] == 2:
        z1, z2 = grid[:, 0], grid[:, 1].flip(0)  # z2 grows upwards, as on a map
        z = torch.stack(torch.meshgrid(z2, z1, indexing="ij")[::-1], dim=-1).reshape(-1, 2)
        plots.image_grid(
            decode(z),
            shape,
            steps,
            path,
            "decoded grid over the 2-D latent space (z1 across, z2 up)",
        )
        return
    order = torch.argsort(activity.to(codes.device), descending=True)[:max_rows]
    centre = codes.median(dim=0).values
    z = centre.repeat(len(order), steps, 1)
    for row, j in enumerate(order.tolist()):
        z[row, :, j] = grid[:, j]
    plots.image_grid(
        decode(z.reshape(-1, codes.shape[1])),
        shape,
        len(order),
        path,
        "traversal along the most active dimensions (others at their median)",
        row_labels=[f"z{j}" for j in order.tolist()],
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
) -> None:
    """Rows: x_a, decoded codes on the segment [m(x_a), m(x_b)], x_b; pairs of classes c, c+1."""
    classes = sorted(set(labels.tolist()))
    firsts = {c: int(torch.nonzero(labels == c)[0]) for c in classes}
    chosen = [(firsts[a], firsts[b]) for a, b in zip(classes[::2], classes[1::2], strict=False)][
        :pairs
    ]
    if not chosen:  # one class only: pair the first images
        chosen = [(i, i + 1) for i in range(0, min(2 * pairs, len(x) - 1), 2)]
    means = posterior_means(vae.guide, x[[i for pair in chosen for i in pair]])
    t = torch.linspace(0, 1, steps, device=x.device, dtype=means.dtype).unsqueeze(-1)
    rows = []
    decode = _decoder(vae)
    for k, (a, b) in enumerate(chosen):
        za, zb = means[2 * k], means[2 * k + 1]
        rows += [x[a : a + 1], decode((1 - t) * za + t * zb), x[b : b + 1]]
    plots.image_grid(
        torch.cat(rows), shape, len(chosen), path, "interpolation between encoded test images"
    )


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
    images (a conditional model's as ``vae.display`` composes them); feature vectors as
    heatmaps."""
    vae.eval()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    image = is_image_shape(shape)
    names = figure_names(shape, conditional=vae.conditional)
    plots.loss_curves(metrics, directory / "loss_curves.png", title=title)
    device = test_x.device
    inputs = test_x[torch.linspace(0, test_x.shape[0] - 1, 30, device=device).long()]
    recons = vae.reconstruct(inputs)
    shown = vae.display_shape(shape)
    if image:
        plots.reconstructions(
            vae.display(inputs, vae.observed(inputs)),
            vae.display(inputs, recons),
            shown,
            directory / "reconstructions.png",
        )
    else:
        panels = {"test data": vae.observed(inputs), "reconstructions E[x | z = E_q z]": recons}
        plots.feature_heatmaps(panels, directory / "reconstructions.png")
    with torch.random.fork_rng(devices=[device] if test_x.is_cuda else []):
        torch.manual_seed(0)
        if image:
            like = test_x[:100]
            samples = vae.display(like, vae.sample(100, like=like))
            plots.samples(samples, shown, directory / "prior_samples.png")
        else:
            plots.feature_heatmaps(
                {"samples E[x | z], z ~ p(z)": vae.sample(30, like=test_x[:30])},
                directory / "prior_samples.png",
            )
        x = test_x[:5000]
        codes = posterior_means(vae.guide, x)
        n_active, activity = active_units(vae.guide, x, ACTIVE_THRESHOLD)
        plots.latent_map(codes, test_y[: len(x)], directory / "latent_map.png")
        if "latent_traversal.png" in names:
            traversal(vae, codes, activity, shape, directory / "latent_traversal.png")
            interpolation(vae, x, test_y[: len(x)], shape, directory / "interpolation.png")
        plots.kl_per_dimension(
            kl_per_dimension(vae.model, vae.guide, x),
            activity,
            ACTIVE_THRESHOLD,
            directory / "kl_per_dimension.png",
        )


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return html.escape(str(value))


def _table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; }
.numbers { display: flex; flex-wrap: wrap; gap: 1em; }
.numbers div { background: #f6f8fa; padding: 0.6em 1em; border-radius: 6px; }
.numbers b { display: block; font-size: 1.3em; }
.scroll { max-height: 28em; overflow-y: auto; display: inline-block; }
"""


def write_report(run_dir: str | Path) -> Path:
    """RUN_DIR/report.html: key numbers, figures (embedded), config and per-epoch metrics."""
    run_dir = Path(run_dir)
    config = json.loads((run_dir / runs.CONFIG).read_text())
    metrics = runs.read_metrics(run_dir / runs.METRICS) if (run_dir / runs.METRICS).exists() else []
    summary_file, evaluation_file = run_dir / runs.SUMMARY, run_dir / "evaluation.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    evaluation = json.loads(evaluation_file.read_text()) if evaluation_file.exists() else {}

    numbers = [
        ("test -ELBO", summary.get("test_neg_elbo"), "nats"),
        ("test distortion", summary.get("test_distortion"), "nats"),
        ("test rate (KL)", summary.get("test_rate"), "nats"),
        (
            f"test log p(x), K={evaluation.get('num_samples')}",
            evaluation.get("test_log_likelihood"),
            "nats",
        ),
        ("active units", evaluation.get("active_units"), f"of {config.get('z_dim')}"),
        ("seconds per epoch", summary.get("seconds_per_epoch"), summary.get("device", "")),
    ]
    cards = "".join(
        f"<div>{html.escape(label)}<b>{_fmt(value)}</b>{html.escape(str(unit))}</div>"
        for label, value, unit in numbers
        if value is not None
    )
    figures = "".join(
        f"<figure>{_image(run_dir / runs.FIGURES / name)}"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for name, caption in FIGURES
        if (run_dir / runs.FIGURES / name).exists()
    )
    columns = [
        c
        for c in [
            "epoch",
            "beta",
            "train_loss",
            "train_neg_elbo",
            "test_neg_elbo",
            "test_distortion",
            "test_rate",
            "train_seconds",
        ]
        if metrics and c in metrics[0]
    ]
    reference = summary.get("reference_check")
    check = (
        f"<p>Reference check on the first batch: Pyro's loss {reference['pyro_loss']:.4f},"
        f" hand-written loss {reference['reference_loss']:.4f}.</p>"
        if reference
        else ""
    )
    title = (
        f"{config['dataset']}: {config['likelihood']} likelihood, {config['prior']} prior, "
        f"{config['estimator']} estimator, beta={config['beta']}, z={config['z_dim']}"
    )
    if config.get("autoencoder"):
        title = f"{config['dataset']}: deterministic autoencoder, z={config['z_dim']}"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>pyro-vae run {html.escape(run_dir.name)}</title><style>{STYLE}</style></head>
<body>
<h1>pyro-vae run <code>{html.escape(str(run_dir))}</code></h1>
<p>{html.escape(title)}; {len(metrics)} epochs.</p>
<div class="numbers">{cards}</div>
{check}
<h2>Figures</h2>
{figures}
<h2>Metrics per epoch (nats per image)</h2>
<div class="scroll">{_table(metrics, columns)}</div>
<h2>Configuration</h2>
{_table([{"option": k, "value": v} for k, v in config.items()], ["option", "value"])}
</body></html>
"""
    path = run_dir / REPORT
    runs.atomic_write(path, lambda f: f.write(page.encode()))
    return path
