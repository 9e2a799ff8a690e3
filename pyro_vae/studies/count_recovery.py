"""Count-data example: train Poisson, negative-binomial and zero-inflated NB VAEs on counts
drawn from a known model (:mod:`pyro_vae.data.synthetic`) and measure how well each recovers it.

    pyro-vae study count-recovery --out runs/count-recovery

Measured on the 1,000 test cells:

- test log p(x | l) (K importance samples), beside the true model's own log p(x | l);
- the inverse dispersions theta_g: correlation of log theta-hat with log theta, and the median
  factor between them;
- the latent space: R^2 of the best affine map from the posterior means to the true codes
  (the latent space is identified only up to such maps);
- the expression proportions rho = softmax(decoder(E_q z)): correlation of log rho-hat with
  the true log rho(z) over every cell and gene.

On your own counts (``--data PATH``: an AnnData ``.h5ad``, a CSV/TSV/Parquet table, an
array of counts; ``--data-key`` picks the layer, key or label column) there is no known truth:
each family is trained on the file, split by its ``--test-fraction`` default, and measured by
held-out log p(x | l) and -ELBO (and the learned theta_g's median); the truth-based columns are
left out, and the table says so.

Writes count_recovery.json, count_recovery.md and count_recovery.png under OUT.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..data import CountTruth, ImageData, count_data
from ..data.sources import open_source
from ..inference import posterior_means
from ..report.plots import plt
from ..training import TrainConfig, load_run, read_config
from ..training.option_help import option_help
from .harness import evaluate_or_reuse, study, train_or_reuse
from .tables import write_tables

FAMILIES = ("poisson", "negative-binomial", "zero-inflated-negative-binomial")


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def affine_r2(codes: torch.Tensor, target: torch.Tensor) -> float:
    """R^2 of the least-squares affine map codes -> target, averaged over target columns."""
    design = torch.cat([codes.double(), torch.ones(len(codes), 1, dtype=torch.float64)], 1)
    target = target.double()
    coef = torch.linalg.lstsq(design, target).solution
    residual = ((target - design @ coef) ** 2).sum(0)
    total = ((target - target.mean(0)) ** 2).sum(0)
    return float((1 - residual / total).mean())


@torch.no_grad()
def recovery(run_dir: Path, truth: CountTruth) -> dict[str, Any]:
    """Dispersion, latent and proportion recovery of a trained count VAE (see module doc)."""
    run = load_run(run_dir, "cpu")
    vae, x = run.vae, run.test_x
    codes = posterior_means(vae.guide, x)
    log_rho = torch.log_softmax(vae.decoder(codes)[..., : x.shape[-1]], -1)
    result = {
        "latent_r2": affine_r2(codes, truth.test_z),
        "log_proportion_correlation": _correlation(log_rho, truth.proportions(truth.test_z).log()),
    }
    if hasattr(vae.likelihood, "log_theta"):
        log_theta = vae.likelihood.log_theta.detach()
        result["log_theta_correlation"] = _correlation(log_theta, truth.theta.log())
        result["theta_median_factor"] = float((log_theta - truth.theta.log()).abs().median().exp())
        result["theta"] = log_theta.exp().tolist()
    return result


COLUMNS = [
    ("model", "model", ""),
    ("log_px", "test log p(x)", ".2f"),
    ("log_px_stderr", "± SE", ".2f"),
    ("test_neg_elbo", "test -ELBO", ".2f"),
    ("latent_r2", "latent R²", ".3f"),
    ("log_proportion_correlation", "corr log ρ", ".3f"),
    ("log_theta_correlation", "corr log θ", ".3f"),
    ("theta_median_factor", "θ median factor", ".2f"),
]


def _family_row(
    family: str, config: TrainConfig, data: ImageData, truth: CountTruth, num_samples: int
) -> dict[str, Any]:
    """Train (or reuse) one count VAE and measure what it recovered."""
    summary = train_or_reuse(config, data)
    evaluation = evaluate_or_reuse(Path(config.out), num_samples, data)
    return {
        "model": family,
        "log_px": evaluation["test_log_likelihood"],
        "log_px_stderr": evaluation["test_log_likelihood_stderr"],
        "test_neg_elbo": evaluation["test_neg_elbo"],
        "seconds_per_epoch": summary["seconds_per_epoch"],
        **recovery(Path(config.out), truth),
    }


def count_recovery(
    out: str | Path,
    epochs: int = 100,
    num_samples: int = 5000,
    z_dim: int = 2,
    hidden: Sequence[int] = (128,),
    seed: int = 0,
    data: str | Path | None = None,
    data_key: str | None = None,
) -> dict[str, Any]:
    """Each count family trained on the synthetic counts, beside the true model's own
    log p(x | l); or, with ``data``, on the counts of that file (``data_key``: its layer, key
    or label column), where no truth is known. Returns the config and the rows (also written
    under ``out``)."""
    sizes = {"epochs": epochs, "z_dim": z_dim, "hidden": tuple(hidden), "seed": seed}
    if data is not None:
        return _on_file(Path(out), Path(data), data_key, num_samples, sizes)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data, truth = count_data()
    oracle, oracle_se = truth.log_likelihood(data.test_x, truth.test_z, num_samples)
    se = float(oracle_se.pow(2).sum().sqrt() / len(oracle))
    rows = [{"model": "true model", "log_px": float(oracle.mean()), "log_px_stderr": se}]
    for family in FAMILIES:
        config = _family_config(family, out, sizes, dataset="synthetic-counts")
        rows.append(_family_row(family, config, data, truth, num_samples))
    config = {
        "data": "synthetic-counts: 4,000 + 1,000 cells x 200 genes, NB, 2-D latent, 4 types",
        "epochs": epochs,
        "num_samples": num_samples,
        "z_dim": z_dim,
        "hidden": list(hidden),
        "seed": seed,
        "library": "observed",
        "true_theta": truth.theta.tolist(),
    }
    header = (
        f"Count VAEs on synthetic NB counts ({epochs} epochs, z = {z_dim}, test log p(x | l) "
        f"with K = {num_samples}; the true model's own log p(x | l) on the first row)"
    )
    write_tables(out, "count_recovery", config, rows, header, COLUMNS)
    _figure(out, truth, rows, data.test_y)
    return {"config": config, "rows": rows}


def _family_config(family: str, out: Path, sizes: dict[str, Any], **data: Any) -> TrainConfig:
    """One family's run: observed library size, the study's sizes, under ``out/FAMILY``."""
    return TrainConfig(
        likelihood=family,
        library="observed",
        out=str(out / family),
        progress=False,
        **data,
        **sizes,
    )


# --- on a file of the user's: no known truth --------------------------------------------------

FILE_COLUMNS = [
    ("model", "model", ""),
    ("log_px", "test log p(x)", ".2f"),
    ("log_px_stderr", "± SE", ".2f"),
    ("test_neg_elbo", "test -ELBO", ".2f"),
    ("theta_median", "median θ̂", ".2f"),
]
LEFT_OUT = [title for key, title, _ in COLUMNS[4:]]  # the columns that need the true model


def _on_file(
    out: Path, path: Path, data_key: str | None, num_samples: int, sizes: dict[str, Any]
) -> dict[str, Any]:
    """Each count family trained and measured on the counts at ``path`` (see the module doc).
    The file is opened first, so a path that cannot be read is refused before OUT is made."""
    source = open_source(path, data_key=data_key)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for family in FAMILIES:
        config = _family_config(family, out, sizes, data=str(path), data_key=data_key)
        summary = train_or_reuse(config)
        evaluation = evaluate_or_reuse(Path(config.out), num_samples)
        rows.append(
            {
                "model": family,
                "log_px": evaluation["test_log_likelihood"],
                "log_px_stderr": evaluation["test_log_likelihood_stderr"],
                "test_neg_elbo": evaluation["test_neg_elbo"],
                "seconds_per_epoch": summary["seconds_per_epoch"],
                **_learned_theta(Path(config.out)),
            }
        )
    record = read_config(out / FAMILIES[0]).data_source or {}
    config = {
        "data": str(path),
        "data_key": data_key,
        "data_source": {k: record.get(k) for k in ("format", "shape", "values", "train", "test")},
        "num_samples": num_samples,
        **{**sizes, "hidden": list(sizes["hidden"])},
        "library": "observed",
        "left_out": LEFT_OUT,
    }
    header = (
        f"Count VAEs on {source.name} ({sizes['epochs']} epochs, z = {sizes['z_dim']}, "
        f"held-out log p(x | l) with K = {num_samples}). The file has no known truth: the "
        f"columns that need one ({', '.join(LEFT_OUT)}) and the true model's row are left out"
    )
    write_tables(out, "count_recovery", config, rows, header, FILE_COLUMNS)
    _file_figure(out, rows)
    return {"config": config, "rows": rows}


@torch.no_grad()
def _learned_theta(run_dir: Path) -> dict[str, Any]:
    """The learned inverse dispersions of an NB family's run (none for Poisson)."""
    likelihood = load_run(run_dir, "cpu").vae.likelihood
    if not hasattr(likelihood, "log_theta"):
        return {}
    theta = likelihood.log_theta.detach().exp()
    return {"theta_median": float(theta.median()), "theta": theta.tolist()}


def _figure(out: Path, truth: CountTruth, rows: list[dict], labels: torch.Tensor) -> None:
    """Learned against true dispersions, the NB VAE's latent map, held-out likelihoods."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    ax = axes[0]
    for row in rows:
        if "theta" in row:
            ax.scatter(truth.theta, row["theta"], s=10, alpha=0.7, label=row["model"])
    lo, hi = float(truth.theta.min()) / 2, float(truth.theta.max()) * 2
    ax.plot([lo, hi], [lo, hi], "k:", lw=1, label="y = x")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="true θ_g",
        ylabel="learned θ_g",
        title="inverse dispersion per gene",
    )
    ax.legend(fontsize=8)
    _latent_panel(axes[1], Path(out) / "negative-binomial", labels)
    _likelihood_panel(axes[2], rows, ["grey"] + ["C0"] * (len(rows) - 1))
    fig.tight_layout()
    fig.savefig(out / "count_recovery.png", dpi=110)
    plt.close(fig)


def _file_figure(out: Path, rows: list[dict]) -> None:
    """On a file: the NB VAE's latent map (by the file's labels, if any), held-out
    likelihoods."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    _latent_panel(axes[0], out / "negative-binomial")
    _likelihood_panel(axes[1], rows, ["C0"] * len(rows))
    fig.tight_layout()
    fig.savefig(out / "count_recovery.png", dpi=110)
    plt.close(fig)


def _latent_panel(ax: Any, run_dir: Path, labels: torch.Tensor | None = None) -> None:
    """E_q[z|x] of the run's test cells (the first two latent dimensions), by ``labels``
    (default: the run's own test labels; a file without labels has one class)."""
    run = load_run(run_dir, "cpu")
    labels = run.data.test_y if labels is None else labels
    codes = posterior_means(run.vae.guide, run.test_x)
    codes = torch.cat([codes, torch.zeros(len(codes), 1)], 1) if codes.shape[1] < 2 else codes
    classes = labels.unique().tolist()
    for c in classes:
        pick = labels == c
        name = f"type {c}" if len(classes) > 1 else "test cells"
        ax.scatter(codes[pick, 0], codes[pick, 1], s=4, alpha=0.6, label=name)
    ax.set(xlabel="z1", ylabel="z2", title="negative-binomial VAE: E_q[z|x] of test cells")
    ax.legend(fontsize=8, markerscale=3)


def _likelihood_panel(ax: Any, rows: list[dict], colors: list[str]) -> None:
    """Each row's held-out log p(x | l), as bars."""
    names = [r["model"] for r in rows]
    values = [r["log_px"] for r in rows]
    ax.barh(names, values, color=colors)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.1f}", va="center", fontsize=8)
    ax.set_xlim(min(values) - 10, max(values) + 10)
    ax.set(xlabel="test log p(x | l), nats per cell", title="held-out likelihood")


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/count-recovery", help="where the runs and tables go")
    p.add_argument("--epochs", type=int, default=100, help="training epochs of each run")
    p.add_argument(
        "--num-samples",
        type=int,
        default=5000,
        help="importance samples per cell, K, for test log p(x | l)",
    )
    p.add_argument("--z-dim", type=int, default=2, help="latent dimensions")
    p.add_argument(
        "--hidden", type=int, nargs="+", default=[128], metavar="N", help=option_help("hidden")
    )
    p.add_argument("--seed", type=int, default=0, help="the seed of the data and of every run")
    p.add_argument(
        "--data",
        default=None,
        metavar="PATH",
        help="your counts (.h5ad, CSV/TSV/Parquet, .npy/.npz/HDF5) instead of the synthetic "
        "ones: no known truth, so only held-out log p(x | l) and -ELBO (default: synthetic)",
    )
    p.add_argument("--data-key", default=None, help=option_help("data_key"))


@study(
    "count-recovery",
    "count likelihoods on counts from a known model: what they recover",
    _arguments,
)
def run(args: argparse.Namespace) -> int:
    if args.data_key is not None and args.data is None:
        raise ValueError("--data-key names a layer, key or column of --data PATH: give the file")
    count_recovery(
        args.out, args.epochs, args.num_samples, args.z_dim, args.hidden, args.seed,
        data=args.data, data_key=args.data_key,
    )  # fmt: skip
    print((Path(args.out) / "count_recovery.md").read_text())
    return 0
