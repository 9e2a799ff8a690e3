"""How AIS converges as the annealing grows, and how tightly BDMC brackets log p(x).

    pyro-vae study ais-convergence --out runs/ais-convergence [--run RUN_DIR]

On the linear-Gaussian model (:mod:`pyro_vae.checks.linear_gaussian`), whose log p(x) is exact,
with a guide moved off the true posterior: for each number of annealing steps T, the error of
AIS started from q(z|x) and from p(z), and BDMC's lower and upper bounds on images simulated
from the model (Grosse et al., 2015), all against the exact value. With ``--run``, the same
curve on a trained VAE: AIS against importance sampling with K samples on a fixed subset of
test images, and the BDMC gap on as many images simulated from it, with what each costs.
Writes ``ais_convergence.json``, ``.md`` and ``.png`` (and ``ais_run.*`` with ``--run``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import pyro
import torch

from ..checks.linear_gaussian import LinearGaussian
from ..inference import log_likelihood
from ..inference.ais import ais_log_likelihood
from ..inference.bdmc import bdmc, simulate
from ..report.plots import plt
from ..training import load_run
from .harness import announce, at_least, study
from .tables import write_tables


def _timed(fn, *args, **kwargs) -> tuple[Any, float]:
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t0


def linear_gaussian_curve(
    steps: list[int], images: int, chains: int, leapfrog: int, seed: int = 0
) -> list[dict[str, Any]]:
    """Per T: mean error (nats) of AIS from q(z|x) and from p(z), and BDMC's bounds, against
    the exact log p(x) of ``images`` images simulated from a 20-D, 5-latent linear-Gaussian
    model whose guide is perturbed off the posterior."""
    lg = LinearGaussian(D=20, d=5, s=0.5).perturbed(0.2)
    pyro.set_rng_seed(seed)
    latents, x = simulate(lg.model, images, torch.zeros(images, 20, dtype=torch.float64))
    exact = lg.log_evidence(x).detach()
    rows = []
    for T in steps:
        announce(f"linear-Gaussian, T={T}")
        pyro.set_rng_seed(seed)
        guide, seconds = _timed(ais_log_likelihood, lg.model, lg.guide, x, T, chains, leapfrog)
        prior = ais_log_likelihood(lg.model, lg.guide, x, T, chains, leapfrog, initial="prior")
        sandwich = bdmc(lg.model, lg.guide, x, latents, T, chains, leapfrog)
        rows.append(
            {
                "steps": T,
                "ais_guide_error": float((guide.per_image - exact).mean()),
                "ais_prior_error": float((prior.per_image - exact).mean()),
                "bdmc_lower_error": float((sandwich.lower - exact).mean()),
                "bdmc_upper_error": float((sandwich.upper - exact).mean()),
                "bdmc_gap": sandwich.mean_gap,
                "ess_guide": float(guide.ess.mean()),
                "acceptance_guide": float(guide.acceptance.nanmean()),
                "seconds_ais_guide": seconds,
            }
        )
    return rows


def trained_run_curve(
    run_dir: Path,
    steps: list[int],
    images: int,
    chains: int,
    leapfrog: int,
    num_samples: int,
    seed: int = 0,
    progress: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """IS with K = ``num_samples`` once, then per T: AIS and BDMC (on simulated images) on a
    trained run, with the seconds and images per second of each."""
    run = load_run(run_dir, device="cpu")
    pick = torch.randperm(len(run.test_x), generator=torch.Generator().manual_seed(0))
    x = run.test_x[pick[:images]]
    model, guide = run.vae.model, run.vae.guide
    pyro.set_rng_seed(seed)
    announce(f"{run_dir}: importance sampling, K={num_samples}")
    ll, is_seconds = _timed(log_likelihood, model, guide, x, num_samples, progress=progress)
    latents, simulated = simulate(model, images, x)
    base = {"run": str(run_dir), "epoch": run.epoch, "images": images, "num_samples": num_samples}
    base |= {"is": ll.mean, "is_seconds": is_seconds}
    rows = []
    for T in steps:
        announce(f"{run_dir}: AIS and BDMC, T={T}")
        pyro.set_rng_seed(seed)
        ais, seconds = _timed(
            ais_log_likelihood, model, guide, x, T, chains, leapfrog, progress=progress
        )
        sandwich, bdmc_seconds = _timed(
            bdmc, model, guide, simulated, latents, T, chains, leapfrog, progress=progress
        )
        rows.append(
            {
                "steps": T,
                "ais": ais.mean,
                "ais_minus_is": ais.mean - ll.mean,
                "ess": float(ais.ess.mean()),
                "acceptance": float(ais.acceptance.nanmean()),
                "ais_images_per_second": images / seconds,
                "bdmc_lower": sandwich.mean_lower,
                "bdmc_upper": sandwich.mean_upper,
                "bdmc_gap": sandwich.mean_gap,
                "bdmc_images_per_second": images / bdmc_seconds,
            }
        )
    return base, rows


def _figure(lg_rows: list[dict], run_rows: list[dict] | None, base: dict | None, path: Path):
    """Left: the linear-Gaussian errors against T. With a trained run, middle: AIS against IS
    on its test images; right: the BDMC gap on images simulated from it."""
    panels = 3 if run_rows else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.3), squeeze=False)
    ax = axes[0][0]
    T = [r["steps"] for r in lg_rows]
    for key, label, style in [
        ("ais_guide_error", "AIS from q(z|x)", "o-"),
        ("ais_prior_error", "AIS from p(z)", "s-"),
        ("bdmc_lower_error", "BDMC lower (forward AIS)", "v--"),
        ("bdmc_upper_error", "BDMC upper (reverse AIS)", "^--"),
    ]:
        ax.plot(T, [r[key] for r in lg_rows], style, label=label)
    ax.axhspan(-0.05, 0.05, color="gray", alpha=0.2, label="within 0.05 nats")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=0.05)
    ticks = [-10, -1, -0.1, 0, 0.1, 1, 10]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xlabel("annealing steps T")
    ax.set_ylabel("estimate - exact log p(x), nats (mean over images)")
    ax.set_title("linear-Gaussian model (exact log p(x) known)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    if run_rows and base:
        T = [r["steps"] for r in run_rows]
        ax = axes[0][1]
        ax.plot(T, [r["ais"] for r in run_rows], "o-", label="AIS from q(z|x)")
        ax.axhline(base["is"], color="gray", ls=":", label=f"IS, K={base['num_samples']}")
        ax.set_xscale("log")
        ax.set_xlabel("annealing steps T")
        ax.set_ylabel("test log p(x), nats per image (higher: tighter)")
        ax.set_title(
            f"trained run, epoch {base['epoch']}: {base['images']} test images", fontsize=10
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax = axes[0][2]
        ax.plot(T, [r["bdmc_gap"] for r in run_rows], "o-", label="upper - lower, mean")
        ax.axhline(1.0, color="gray", ls=":", label="1 nat")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("annealing steps T")
        ax.set_ylabel("BDMC gap, nats per image")
        ax.set_title(f"the same run: {base['images']} simulated images", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--steps",
        type=at_least(1),
        nargs="+",
        default=[1, 3, 10, 30, 100, 300, 1000, 3000],
        metavar="T",
        help="annealing steps on the linear-Gaussian model",
    )
    p.add_argument("--images", type=at_least(1), default=100, help="images per measurement")
    p.add_argument("--chains", type=at_least(1), default=8, help="chains per image")
    p.add_argument("--leapfrog", type=at_least(1), default=2, help="leapfrog steps per HMC move")
    p.add_argument("--run", default=None, metavar="RUN_DIR", help="also measure a trained run")
    p.add_argument(
        "--run-steps",
        type=at_least(1),
        nargs="+",
        default=[10, 100, 500],
        metavar="T",
        help="annealing steps on the trained run",
    )
    p.add_argument("--num-samples", type=at_least(1), default=5000, help="IS samples, K (--run)")
    p.add_argument("--seed", type=int, default=0, help="the seed of every estimate")
    p.add_argument("--out", default="runs/ais-convergence", help="where the tables go")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


@study("ais-convergence", "AIS and BDMC against exact log p(x), and on a trained run", _arguments)
def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    lg_rows = linear_gaussian_curve(args.steps, args.images, args.chains, args.leapfrog, args.seed)
    settings = {"images": args.images, "chains": args.chains, "leapfrog": args.leapfrog}
    text = write_tables(
        out,
        "ais_convergence",
        {"model": "linear-Gaussian D=20 d=5 s=0.5, guide perturbed 0.2", **settings},
        lg_rows,
        "linear-Gaussian model: mean (estimate - exact log p(x)) over images, nats",
        [
            ("steps", "T", ""),
            ("ais_guide_error", "AIS from q(z|x)", "+.4f"),
            ("ais_prior_error", "AIS from p(z)", "+.4f"),
            ("bdmc_lower_error", "BDMC lower", "+.4f"),
            ("bdmc_upper_error", "BDMC upper", "+.4f"),
            ("bdmc_gap", "BDMC gap", ".4f"),
            ("ess_guide", "ESS (q start)", ".1f"),
            ("seconds_ais_guide", "s (q start)", ".2f"),
        ],
    )
    base = run_rows = None
    if args.run is not None:
        base, run_rows = trained_run_curve(
            Path(args.run), args.run_steps, args.images, args.chains, args.leapfrog,
            args.num_samples, args.seed, not args.no_progress,
        )  # fmt: skip
        text += "\n" + write_tables(
            out,
            "ais_run",
            {**base, **settings},
            run_rows,
            f"{args.run} (epoch {base['epoch']}): IS K={args.num_samples} {base['is']:.2f} "
            f"({base['is_seconds']:.1f} s) on {args.images} test images; BDMC on as many "
            "simulated images",
            [
                ("steps", "T", ""),
                ("ais", "AIS", ".2f"),
                ("ais_minus_is", "AIS - IS", "+.2f"),
                ("ess", "ESS", ".1f"),
                ("acceptance", "acceptance", ".2f"),
                ("ais_images_per_second", "AIS images/s", ".2f"),
                ("bdmc_gap", "BDMC gap", ".3f"),
                ("bdmc_images_per_second", "BDMC images/s", ".2f"),
            ],
        )
    _figure(lg_rows, run_rows, base, out / "ais_convergence.png")
    print(text)
    return 0
