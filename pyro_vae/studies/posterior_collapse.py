"""Posterior collapse and its remedies: a setting that switches latent dimensions off (a strong
KL weight) and the objectives against it (KL warm-up, free bits, capacity annealing), compared
by active units (Burda et al., 2016) and by the dimensions that carry information.

    pyro-vae study posterior-collapse --out runs/posterior-collapse

Writes posterior_collapse.json, posterior_collapse.md and active_units.png under OUT.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

from ..data import load_dataset
from ..report import plots
from ..training import TrainConfig
from .harness import base_config, evaluate_or_reuse, run_arguments, study, train_or_reuse
from .tables import write_tables

COLLAPSE_SETTINGS = [
    ("VAE, beta=1", {}),
    ("beta=8 (collapse)", {"beta": 8.0}),
    ("beta=8 + KL warm-up", {"beta": 8.0, "kl_warmup_epochs": 20.0}),
    ("beta=8 + free bits 0.5", {"beta": 8.0, "estimator": "free-bits", "free_bits": 0.5}),
    (
        "capacity C->40, gamma=8",
        {"estimator": "capacity", "capacity": 40.0, "capacity_gamma": 8.0, "capacity_epochs": 30.0},
    ),
]
INFORMATIVE_KL = 0.1  # nats: a dimension carrying less than this is collapsed onto the prior


def posterior_collapse(out: str | Path, base: TrainConfig) -> list[dict]:
    """A setting that collapses latent dimensions (a strong KL weight) and the remedies
    against it, compared by active units (Burda et al., 2016)."""
    out = Path(out)
    data = load_dataset(base.dataset, base.data_dir)
    rows = []
    for label, changes in COLLAPSE_SETTINGS:
        run_dir = out / re.sub(r"[^a-z0-9.]+", "-", label.lower()).strip("-")
        train_or_reuse(dataclasses.replace(base, out=str(run_dir), **changes), data)
        e = evaluate_or_reuse(run_dir, 0, data)
        rows.append(
            {
                "setting": label,
                "active_units": e["active_units"],
                "informative_dims": sum(k > INFORMATIVE_KL for k in e["kl_per_dim"] or []),
                "z_dim": e["z_dim"],
                "rate": e["test_rate"],
                "distortion": e["test_distortion"],
                "neg_elbo": e["test_neg_elbo"],
                "run": str(run_dir),
                "activity": e["activity_per_dim"],
            }
        )
    write_tables(
        out,
        "posterior_collapse",
        base.as_dict(),
        rows,
        f"{base.dataset}, {base.network} {base.hidden}, z={base.z_dim}, {base.epochs} "
        "epochs; test set, nats per image",
        [
            ("setting", "setting", ""),
            ("active_units", "active units", ""),
            ("informative_dims", f"dims with KL > {INFORMATIVE_KL} nats", ""),
            ("rate", "rate KL", ".2f"),
            ("distortion", "distortion", ".2f"),
            ("neg_elbo", "-ELBO (beta=1)", ".2f"),
        ],
    )
    plots.activity_profiles(
        rows, out / "active_units.png", f"{base.dataset}: activity of each latent dimension"
    )
    return rows


# --- command lines ------------------------------------------------------------------------------


def _arguments(p: argparse.ArgumentParser) -> None:
    run_arguments(p, "runs/posterior-collapse", epochs=50, z_dim=32)


@study("posterior-collapse", "a collapsing beta and the remedies against it", _arguments)
def run(args: argparse.Namespace) -> int:
    posterior_collapse(args.out, base_config(args))
    print((Path(args.out) / "posterior_collapse.md").read_text())
    return 0
