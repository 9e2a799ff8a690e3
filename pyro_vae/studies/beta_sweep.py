"""beta sweep: the rate-distortion trade-off (Alemi et al., 2018).

    pyro-vae study beta-sweep --out runs/beta-sweep

One run per beta; the test rate (KL) and distortion (-E log p(x|z)) of each trace the
rate-distortion curve, on which -ELBO = D + R is smallest at beta = 1. Writes beta_sweep.json,
beta_sweep.md and rate_distortion.png under OUT (with ``--replicates``, the curve of the means
with ± sd bars).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from ..data import load_dataset
from ..report import plots
from ..training import TrainConfig
from ..training.atomic_files import atomic_write
from .harness import base_config, evaluate_or_reuse, run_arguments, study, train_or_reuse
from .tables import write_tables

BETAS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def beta_sweep(out: str | Path, betas: Sequence[float], base: TrainConfig) -> list[dict]:
    """One run of ``base`` per beta under ``out``; returns the table rows (also written)."""
    out = Path(out)
    data = load_dataset(base.dataset, base.data_dir)
    rows = []
    for beta in betas:
        run_dir = out / f"beta{beta:g}"
        train_or_reuse(dataclasses.replace(base, beta=beta, out=str(run_dir)), data)
        e = evaluate_or_reuse(run_dir, 0, data)
        rows.append(
            {
                "beta": beta,
                "rate": e["test_rate"],
                "distortion": e["test_distortion"],
                "neg_elbo": e["test_neg_elbo"],
                "active_units": e["active_units"],
                "z_dim": e["z_dim"],
                "run": str(run_dir),
            }
        )
    write_tables(
        out,
        "beta_sweep",
        base.as_dict() | {"betas": list(betas)},
        rows,
        f"{base.dataset}, {base.network} {base.hidden}, z={base.z_dim}, {base.epochs} "
        "epochs; test set, nats per image",
        [
            ("beta", "beta", "g"),
            ("rate", "rate KL", ".2f"),
            ("distortion", "distortion", ".2f"),
            ("neg_elbo", "-ELBO (beta=1)", ".2f"),
            ("active_units", "active units", ""),
        ],
    )
    plots.rate_distortion(rows, out / "rate_distortion.png", _title(base))
    return rows


def _title(base: TrainConfig) -> str:
    return f"{base.dataset}: rate-distortion by beta (z={base.z_dim})"


def _figure_over_replicates(tables: dict[str, list[dict]], args: argparse.Namespace) -> None:
    """The rate-distortion curve of the means over replicates, with ± sd bars."""
    rows, path = tables["beta_sweep"], Path(args.out) / "rate_distortion.png"
    fig = plots.rate_distortion(rows, path, _title(base_config(args)))
    fig.axes[0].errorbar(
        [r["rate"] for r in rows],
        [r["distortion"] for r in rows],
        xerr=[r.get("rate_sd", 0.0) for r in rows],
        yerr=[r.get("distortion_sd", 0.0) for r in rows],
        fmt="none",
        ecolor="tab:blue",
        capsize=3,
    )
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))


def _arguments(p: argparse.ArgumentParser) -> None:
    run_arguments(p, "runs/beta-sweep", epochs=50, z_dim=16)
    p.add_argument(
        "--betas",
        type=float,
        nargs="+",
        default=list(BETAS),
        metavar="BETA",
        help="the KL weights, one run each",
    )


@study(
    "beta-sweep",
    "the rate-distortion curve: one run per beta",
    _arguments,
    _figure_over_replicates,
)
def run(args: argparse.Namespace) -> int:
    beta_sweep(args.out, args.betas, base_config(args))
    print((Path(args.out) / "beta_sweep.md").read_text())
    return 0
