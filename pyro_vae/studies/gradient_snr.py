"""Gradient signal-to-noise ratio of IWAE estimators as K grows (Rainforth et al., 2018).

For a parameter theta_i and a gradient estimator g_i (one draw of K particles per datapoint
on a fixed batch), SNR_i = |E[g_i]| / sd(g_i), estimated from ``draws`` independent draws.
Rainforth et al. show that with the standard estimator the encoder's SNR falls like
O(1/sqrt(K)) while the decoder's grows like O(sqrt(K)); DReG's encoder SNR does not fall
(Tucker et al., 2019). We report, per parameter group, the mean per-parameter SNR and the SNR
of the group's gradient vector (see :func:`gradient_snr`).

    pyro-vae study gradient-snr --out runs/gradient-snr
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pyro
import torch
from torch import nn

from ..inference import IWAE
from ..report.plots import plt
from ..training import TrainConfig, load_run
from ..workflow import train
from .harness import at_least, study
from .tables import write_tables


def gradient_snr(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    groups: dict[str, Sequence[nn.Parameter]],
    particles: Sequence[int],
    estimators: Sequence[str] = ("standard", "stl", "dreg"),
    draws: int = 100,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """SNR of each estimator's gradient per parameter group, for each K.

    Two summaries per group, result[estimator][group][summary][i] for K = particles[i]:

    - ``param``: the mean over parameters of |mean_i| / sd_i (Rainforth et al.'s per-parameter
      SNR). Parameters with no signal sit at the noise floor sqrt(2/pi)/sqrt(draws).
    - ``vector``: ||E g|| / sqrt(tr Cov g) for the group's whole gradient, with ||E g||^2
      estimated without bias as ||mean||^2 - tr(Cov)/draws; the noise floor does not dominate it.
    """
    names = list(groups)
    flat_params = [p for n in names for p in groups[n]]
    sizes = [sum(p.numel() for p in groups[n]) for n in names]
    result = {e: {n: {"param": [], "vector": []} for n in names} for e in estimators}
    for est in estimators:
        for K in particles:
            elbo = IWAE(num_particles=K, grad=est)
            mean = m2 = None
            for draw in range(draws):  # Welford's running mean and variance
                pyro.set_rng_seed(seed + draw)
                loss = elbo.differentiable_loss(model, guide, x)
                g = torch.cat([t.flatten() for t in torch.autograd.grad(loss, flat_params)])
                g = g.double()
                if mean is None:
                    mean, m2 = g.clone(), torch.zeros_like(g)
                else:
                    delta = g - mean
                    mean += delta / (draw + 1)
                    m2 += delta * (g - mean)
            var = m2 / (draws - 1)
            for name, m, v in zip(names, mean.split(sizes), var.split(sizes), strict=True):
                param = (m.abs() / v.sqrt().clamp(min=1e-30)).mean()
                signal = (m.pow(2).sum() - v.sum() / draws).clamp(min=0).sqrt()
                result[est][name]["param"].append(float(param))
                result[est][name]["vector"].append(float(signal / v.sum().sqrt()))
    return result


def _figure(result: dict, particles: Sequence[int], path: Path, title: str) -> None:
    """SNR against K, a panel per parameter group and summary, a line per estimator."""
    groups = list(next(iter(result.values())))
    summaries = [("vector", "||E g|| / sqrt(tr Cov g)"), ("param", "mean over parameters")]
    fig, axes = plt.subplots(len(summaries), len(groups), figsize=(5.5 * len(groups), 8))
    styles = {"standard": "o-", "stl": "s--", "dreg": "^-"}
    for row, (summary, label) in enumerate(summaries):
        for ax, group in zip(axes[row], groups, strict=True):
            for est, by_group in result.items():
                ax.plot(particles, by_group[group][summary], styles.get(est, "o-"), label=est)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("K (particles)")
            ax.set_ylabel(f"SNR: {label}")
            ax.set_title(f"{group} parameters")
            ax.grid(alpha=0.3, which="both")
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--run",
        default=None,
        metavar="RUN_DIR",
        help="a trained run to study (default: train one, once, for --epochs, in OUT/model)",
    )
    p.add_argument(
        "--epochs", type=int, default=10, help="training epochs of the run trained without --run"
    )
    p.add_argument(
        "--particles",
        type=int,
        nargs="+",
        default=[1, 3, 10, 30, 100, 300],
        metavar="K",
        help="the values of K",
    )
    p.add_argument("--draws", type=at_least(2), default=100, help="gradient draws per K")
    p.add_argument("--batch", type=at_least(1), default=16, help="images in the fixed batch")
    p.add_argument(
        "--seed", type=int, default=0, help="the seed of the run it trains and of the draws"
    )
    p.add_argument("--out", default="runs/gradient-snr", help="where the results go")


def _model(args: argparse.Namespace, out: Path) -> Path:
    """The run to study: ``--run``, or one trained (once) under OUT/model."""
    if args.run is not None:
        return Path(args.run)
    run_dir = out / "model"
    if not (run_dir / "summary.json").exists():
        config = TrainConfig(
            hidden=(200, 200),
            z_dim=50,
            epochs=args.epochs,
            seed=args.seed,
            out=str(run_dir),
            progress=False,
        )
        train(config, overwrite=True)
    return run_dir


@study("gradient-snr", "signal-to-noise of IWAE gradient estimators as K grows", _arguments)
def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run_dir = _model(args, out)
    loaded = load_run(run_dir, device="cpu")
    x = loaded.test_x[torch.linspace(0, len(loaded.test_x) - 1, args.batch).long()]
    vae = loaded.vae
    groups = {"encoder": vae.guide_parameters(), "decoder": list(vae.decoder.parameters())}
    t0 = time.perf_counter()
    result = gradient_snr(
        vae.model, vae.guide, x, groups, args.particles, draws=args.draws, seed=args.seed
    )
    seconds = time.perf_counter() - t0
    ks = [f"K={k}" for k in args.particles]
    rows = [
        {"summary": summary, "estimator": est, "group": group}
        | dict(zip(ks, values[summary], strict=True))
        for summary in ("vector", "param")
        for est, by_group in result.items()
        for group, values in by_group.items()
    ]
    config = {"run": str(run_dir), "epoch": loaded.epoch, "batch": args.batch}
    config |= {"draws": args.draws, "particles": args.particles, "seconds": seconds}
    text = write_tables(
        out,
        "gradient_snr",
        config,
        rows,
        "SNR per parameter group: vector = ||E g|| / sqrt(tr Cov g) of the group's gradient, "
        "param = the mean over its parameters of |E g_i| / sd g_i",
        [("summary", "summary", ""), ("estimator", "estimator", ""), ("group", "group", "")]
        + [(k, k, ".3f") for k in ks],
    )
    title = f"gradient SNR vs K ({loaded.config.dataset}, epoch {loaded.epoch}, "
    title += f"{args.batch} images, {args.draws} draws)"
    _figure(result, args.particles, out / "gradient_snr.png", title)
    print(text)
    return 0
