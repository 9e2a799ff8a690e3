"""discrete-estimators: exact enumeration, the score function and the Gumbel-softmax
relaxation for a class variable, compared at equal steps and at equal wall-clock time.

    pyro-vae study discrete-estimators --out runs/discrete-estimators

The joint VAE (a categorical c beside z) is trained once per estimator for ``--epochs``
epochs (equal steps), and the score-function and relaxed runs again for as many epochs as fit
in the enumerated run's training time (equal wall-clock; they are cheaper per step: one class
instead of K). Every run is scored by the same exact bound: its networks put into the
enumerated model, whose test -ELBO sums over the classes (the relaxed runs trained a
different, relaxed model; this is what their bias costs in the discrete one). The classifier's
gradient is measured on one batch at the enumerated run's final parameters: its variance and
signal-to-noise ratio under each estimator, and the relaxed estimator's bias against the
exact (enumerated) gradient. Writes discrete_estimators.json, .md and .png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyro
import torch

from ..data import load_dataset
from ..inference import ESTIMATORS
from ..model import DISCRETE_SITES, build_model
from ..report.plots import plt
from ..training import TrainConfig, load_run
from ..training.option_help import option_help
from .harness import announce, at_least, chosen_options, study, train_or_reuse
from .tables import write_tables

ESTIMATED = ("enumerate", "score", "relaxed")


def as_enumerated(run_dir: Path):
    """The run's networks in the enumerated model (the same parameters; the class site
    summed out exactly), and the run."""
    run = load_run(run_dir, device="cpu")
    options = run.config.model_options()
    for name in ("temperature", "baseline_hidden"):
        options.pop(name, None)
    options["discrete"] = "enumerate"
    vae = build_model(run.data.shape, **options)
    own = {k: v for k, v in run.vae.state_dict().items() if not k.startswith("discrete.")}
    vae.load_state_dict(own)
    return vae.eval(), run


@torch.no_grad()
def exact_neg_elbo(vae, x: torch.Tensor, batch_size: int = 500) -> float:
    """Test -ELBO per image with the class summed out (TraceEnum_ELBO), one z per class, the
    same draws of z for every run (a fixed seed, the caller's random state untouched)."""
    elbo = ESTIMATORS.create("enum")
    total = 0.0
    # (TraceEnum_ELBO refuses a loss that needs no gradient)
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(0)
        for start in range(0, len(x), batch_size):
            loss = elbo.differentiable_loss(vae.model, vae.guide, x[start : start + batch_size])
            total += float(loss.detach())
    return total / len(x)


def gradient_statistics(
    vae, x: torch.Tensor, draws: int, seed: int, sites: dict
) -> dict[str, dict]:
    """Per estimator (a class site of ``sites``, put into ``vae`` in turn), over ``draws``
    draws on the batch ``x`` at the same parameters: the classifier gradient's mean
    per-parameter SNR |mean| / sd, its total variance, and the distance of its mean from the
    enumerated gradient's mean, relative to the latter's norm, beside the distance the draws'
    noise alone would leave (sqrt of both means' variances summed, same scale): a bias is a
    distance well above its noise."""
    params = list(vae.classifier.parameters())
    means, variances, result = {}, {}, {}
    for discrete in ESTIMATED:
        vae.discrete = sites[discrete]  # the class site's treatment; the networks stay
        elbo = ESTIMATORS.create(vae.discrete.estimated_by)
        grads = []
        for draw in range(draws):
            pyro.set_rng_seed(seed + draw)
            loss = elbo.differentiable_loss(vae.model, vae.guide, x)
            grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]))
        g = torch.stack(grads).double()
        means[discrete] = g.mean(0)
        sd = g.std(0)
        variances[discrete] = float(sd.pow(2).sum()) / draws
        result[discrete] = {
            "snr": float((g.mean(0).abs() / sd.clamp_min(1e-30)).mean()),
            "variance": float(sd.pow(2).sum()),
        }
    exact = means["enumerate"]
    for discrete in ESTIMATED:
        noise = (
            (variances[discrete] + variances["enumerate"]) ** 0.5
            if discrete != "enumerate"
            else 0.0
        )
        result[discrete]["bias"] = float((means[discrete] - exact).norm() / exact.norm())
        result[discrete]["bias_noise"] = float(noise / exact.norm())
    return result


def trained_sites(out: Path, data_dim: int) -> dict:
    """The three class sites, the score function's with the baseline its run trained, the
    relaxed one at its floor temperature (0.5)."""
    score = DISCRETE_SITES.create("score", data_dim=data_dim)
    state = load_run(out / "score", device="cpu").vae.discrete.state_dict()
    score.load_state_dict(state)
    return {
        "enumerate": DISCRETE_SITES.create("enumerate"),
        "score": score,
        "relaxed": DISCRETE_SITES.create("relaxed", temperature=0.5),
    }


def _config(args: argparse.Namespace, discrete: str, epochs: int, name: str) -> TrainConfig:
    return TrainConfig(
        dataset=args.dataset, model="joint", classes=args.classes, discrete=discrete,
        z_dim=args.z_dim, hidden=tuple(args.hidden), epochs=epochs, seed=args.seed,
        device=args.device, out=str(Path(args.out) / name), progress=not args.no_progress,
    )  # fmt: skip


def discrete_estimators(args: argparse.Namespace) -> list[dict]:
    """Train every run (or reuse it) and score it; returns the table's rows."""
    data = load_dataset(args.dataset)
    runs = []
    enum_summary = train_or_reuse(_config(args, "enumerate", args.epochs, "enumerate"), data)
    budget = enum_summary["seconds_per_epoch"] * args.epochs
    runs.append(("enumerate", "equal steps", args.epochs, enum_summary))
    for discrete in ESTIMATED[1:]:
        summary = train_or_reuse(_config(args, discrete, args.epochs, discrete), data)
        runs.append((discrete, "equal steps", args.epochs, summary))
        epochs = max(args.epochs, round(budget / summary["seconds_per_epoch"]))
        timed = _config(args, discrete, epochs, f"{discrete}-equal-time")
        runs.append((discrete, "equal time", epochs, train_or_reuse(timed, data)))
    rows = []
    for discrete, budget_kind, epochs, summary in runs:
        name = discrete if budget_kind == "equal steps" else f"{discrete}-equal-time"
        vae, run = as_enumerated(Path(args.out) / name)
        announce(f"{name}: the exact test bound")
        rows.append(
            {
                "estimator": discrete, "budget": budget_kind, "epochs": epochs,
                "train_seconds": summary["seconds_per_epoch"] * epochs,
                "exact_neg_elbo": exact_neg_elbo(vae, run.test_x),
                "cluster_error": summary.get("test_error"),
            }
        )  # fmt: skip
    vae, run = as_enumerated(Path(args.out) / "enumerate")
    sites = trained_sites(Path(args.out), vae.data_dim)
    stats = gradient_statistics(vae, run.test_x[: args.batch], args.draws, args.seed, sites)
    for row in rows:
        row.update({f"grad_{k}": v for k, v in stats[row["estimator"]].items()})
    return rows


def plot_rows(rows: list[dict], path: Path) -> None:
    """Exact test -ELBO against training time, a marker per run."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for row in rows:
        marker = "o" if row["budget"] == "equal steps" else "s"
        ax.scatter(row["train_seconds"], row["exact_neg_elbo"], marker=marker, s=40)
        ax.annotate(f"{row['estimator']} ({row['epochs']} ep.)",
                    (row["train_seconds"], row["exact_neg_elbo"]), fontsize=7)  # fmt: skip
    ax.set_xlabel("training time, s")
    ax.set_ylabel("exact test -ELBO, nats (class summed out)")
    ax.set_title("o: equal steps, s: equal wall-clock", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="mnist-sample", help=option_help("dataset"))
    p.add_argument("--epochs", type=at_least(1), default=10, help="epochs of the equal-step runs")
    p.add_argument("--classes", type=at_least(2), default=10, help=option_help("classes"))
    p.add_argument("--z-dim", type=at_least(1), default=16, help="latent dimensions of z")
    p.add_argument(
        "--hidden", type=at_least(1), nargs="+", default=[400], metavar="N",
        help=option_help("hidden"),
    )  # fmt: skip
    p.add_argument("--draws", type=at_least(2), default=200, help="gradient draws per estimator")
    p.add_argument("--batch", type=at_least(1), default=100, help="images in the gradient batch")
    p.add_argument("--seed", type=int, default=0, help="the seed of every run")
    p.add_argument("--device", default="auto", help=option_help("device"))
    p.add_argument("--out", default="runs/discrete-estimators", help="where the runs go")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


@study(
    "discrete-estimators",
    "enumeration, score function and Gumbel-softmax for a class variable",
    _arguments,
)
def run(args: argparse.Namespace) -> int:
    rows = discrete_estimators(args)
    out = Path(args.out)
    write_tables(
        out,
        "discrete_estimators",
        chosen_options(args),
        rows,
        f"joint VAE, {args.classes} classes, z={args.z_dim}, {args.dataset}; the exact bound "
        f"sums the class out; gradients of the classifier at the enumerated run's end, "
        f"{args.draws} draws on {args.batch} test images (relaxed at tau = 0.5)",
        [
            ("estimator", "estimator", ""),
            ("budget", "budget", ""),
            ("epochs", "epochs", ""),
            ("train_seconds", "train s", ".1f"),
            ("exact_neg_elbo", "exact test -ELBO", ".2f"),
            ("cluster_error", "cluster error", ".3f"),
            ("grad_snr", "gradient SNR", ".3f"),
            ("grad_variance", "gradient variance", ".3g"),
            ("grad_bias", "distance from exact", ".3f"),
            ("grad_bias_noise", "of which noise", ".3f"),
        ],
    )
    plot_rows(rows, out / "discrete_estimators.png")
    print((out / "discrete_estimators.md").read_text())
    return 0
