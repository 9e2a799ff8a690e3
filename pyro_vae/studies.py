"""Studies a user can rerun: beta sweep (rate-distortion), autoencoder vs VAE, posterior
collapse and its remedies. Each trains its runs under OUT (finished runs are reused, stopped
ones resumed), then writes a JSON file, a Markdown table and a figure.

    python scripts/beta_sweep.py --out runs/beta-sweep
    python scripts/ae_vs_vae.py --out runs/ae-vs-vae
    python scripts/posterior_collapse.py --out runs/posterior-collapse
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from . import plots, runs
from .config import TrainConfig
from .data import ImageData, load_dataset
from .run_evaluation import EVALUATION, evaluate_run, load_run
from .training import train


def train_or_reuse(config: TrainConfig, data: ImageData | None = None) -> dict[str, Any]:
    """The summary of the run in ``config.out``: reused if finished, resumed if stopped,
    trained otherwise. A directory holding a run with other options is an error."""
    out = Path(config.out)
    if (out / runs.CONFIG).exists():
        earlier = TrainConfig.from_dict(json.loads((out / runs.CONFIG).read_text()))
        changed = config.differences(earlier)
        if config.epochs != earlier.epochs:
            changed.append(f"epochs: {config.epochs} != {earlier.epochs}")
        if changed:
            raise ValueError(
                f"{str(out)!r} holds a run with other options ({'; '.join(changed)})"
                ": choose another --out"
            )
    if (out / runs.SUMMARY).exists():
        return json.loads((out / runs.SUMMARY).read_text())
    return train(config, data, resume=(out / runs.CHECKPOINT).exists()).summary


def evaluate_or_reuse(
    run_dir: Path,
    num_samples: int,
    data: ImageData | None = None,
    max_images: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    path = Path(run_dir) / EVALUATION
    if path.exists():
        saved = json.loads(path.read_text())
        if saved["num_samples"] == num_samples and saved.get("max_images") == max_images:
            return saved
    result = evaluate_run(run_dir, num_samples, "auto", max_images, data=data, progress=progress)
    return result


def train_and_measure(
    config: TrainConfig,
    data: ImageData,
    num_samples: int,
    max_images: int | None = None,
) -> dict[str, Any]:
    """Train (or reuse) the run ``config`` describes and measure it: the table fields every
    comparison shares (test log p(x) with K = ``num_samples`` and its SE, test -ELBO on the same
    images, active units, seconds per epoch, rate, distortion, the run directory)."""
    summary = train_or_reuse(config, data)
    e = evaluate_or_reuse(Path(config.out), num_samples, data, max_images, config.progress)
    return {
        "test_neg_elbo": e["test_neg_elbo"],  # on the images log p(x) was measured on
        "test_log_likelihood": e["test_log_likelihood"],
        "test_log_likelihood_stderr": e["test_log_likelihood_stderr"],
        "active_units": e["active_units"],
        "z_dim": e["z_dim"],
        "seconds_per_epoch": summary["seconds_per_epoch"],
        "test_rate": summary["test_rate"],
        "test_distortion": summary["test_distortion"],
        "run": config.out,
    }


def study_metadata(
    dataset: str, epochs: int, num_samples: int, max_images: int | None
) -> dict[str, Any]:
    """What a comparison table was measured with (the header of its JSON and Markdown)."""
    return {
        "dataset": dataset,
        "epochs": epochs,
        "num_samples": num_samples,
        "eval_images": max_images or "all",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def _markdown(
    path: Path, header: str, columns: list[tuple[str, str, str]], rows: list[dict]
) -> None:
    """columns: (key, title, format spec); a value a row lacks shows as a dash."""
    lines = [
        header,
        "",
        "| " + " | ".join(t for _, t, _ in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                "—" if r.get(k) is None else format(r[k], f) if f else str(r[k])
                for k, _, f in columns
            )
            + " |"
        )
    text = "\n".join(lines) + "\n"
    runs.atomic_write(path, lambda f: f.write(text.encode()))


def _save(out: Path, name: str, meta: dict, rows: list[dict]) -> None:
    runs.write_json(out / f"{name}.json", {"config": meta, "rows": rows})


# --- beta sweep: the rate-distortion trade-off ---------------------------------------------


def beta_sweep(out: str | Path, betas: Sequence[float], base: TrainConfig) -> list[dict]:
    """One run per beta; test rate (KL) and distortion (-E log p(x|z)) trace the
    rate-distortion curve (Alemi et al., 2018): -ELBO = D + R is minimised at beta = 1."""
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
    meta = base.as_dict() | {"betas": list(betas)}
    _save(out, "beta_sweep", meta, rows)
    _markdown(
        out / "beta_sweep.md",
        f"{base.dataset}, {base.network} {base.hidden}, z={base.z_dim}, {base.epochs} "
        "epochs; test set, nats per image",
        [
            ("beta", "beta", "g"),
            ("rate", "rate KL", ".2f"),
            ("distortion", "distortion", ".2f"),
            ("neg_elbo", "-ELBO (beta=1)", ".2f"),
            ("active_units", "active units", ""),
        ],
        rows,
    )
    plots.rate_distortion(
        rows,
        out / "rate_distortion.png",
        f"{base.dataset}: rate-distortion by beta (z={base.z_dim})",
    )
    return rows


# --- autoencoder vs VAE ------------------------------------------------------------------------


@torch.no_grad()
def latent_coverage(codes: torch.Tensor, num_draws: int = 2000, seed: int = 0) -> dict:
    """How the test codes and the prior N(0, I) overlap.

    ``codes_in_prior``: share of test codes inside the region holding 99% of the prior's mass
    (||z||^2 below its 99th percentile). ``prior_near_codes``: share of prior draws whose
    nearest test code is closer than the 95th percentile of the codes' own nearest-neighbour
    distances, i.e. prior draws that land where the data lives.
    """
    g = torch.Generator().manual_seed(seed)
    codes = codes.detach().double().cpu()
    draws = torch.randn(num_draws, codes.shape[1], generator=g, dtype=torch.float64)
    radius2 = torch.quantile(
        (torch.randn(100_000, codes.shape[1], generator=g, dtype=torch.float64) ** 2).sum(1), 0.99
    )
    inside = float(((codes**2).sum(1) <= radius2).double().mean())
    own = torch.cdist(codes, codes)
    own.fill_diagonal_(float("inf"))
    typical = torch.quantile(own.min(1).values, 0.95)
    near = float((torch.cdist(draws, codes).min(1).values <= typical).double().mean())
    return {"codes_in_prior": inside, "prior_near_codes": near}


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(m)
    return vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T


@torch.no_grad()
def pixel_frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two image sets in pixel space:
    ||m_a - m_b||^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2). The FID recipe (Heusel et
    al., 2017) without the Inception features: lower means closer in mean, spread and
    correlation of pixels; blurry or faint images score badly."""
    a, b = a.double().reshape(len(a), -1), b.double().reshape(len(b), -1)
    ma, mb = a.mean(0), b.mean(0)
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    root = _sqrt_psd(ca)
    cross = _sqrt_psd(root @ cb @ root)
    return float((ma - mb).pow(2).sum() + torch.trace(ca + cb - 2 * cross))


@torch.no_grad()
def _ae_vs_vae_row(label: str, run, draws: int) -> tuple[torch.Tensor, dict]:
    from .evaluation import posterior_means

    vae, x = run.vae, run.test_x
    codes = posterior_means(vae.guide, x)
    recon = vae.likelihood.mean(vae.decoder(codes))
    distortion = float(-vae.likelihood(vae.decoder(codes)).log_prob(x).mean())
    torch.manual_seed(0)
    samples = vae.sample(draws)
    return samples[:50], {
        "model": label,
        "distortion_at_mean": distortion,
        "recon_mse": float(((recon - x) ** 2).sum(1).mean()),
        "samples_fd": pixel_frechet_distance(samples, x),
        "recon_fd": pixel_frechet_distance(recon, x),
        "code_scale": float(codes.std(0).mean()),
        **latent_coverage(codes),
    }


def ae_vs_vae(out: str | Path, base: TrainConfig, draws: int = 500) -> list[dict]:
    """The same networks trained as a deterministic autoencoder and as a VAE."""
    out = Path(out)
    data = load_dataset(base.dataset, base.data_dir)
    rows, sample_images = [], {}
    for label, autoencoder in [("autoencoder", True), ("VAE", False)]:
        run_dir = out / label.lower()
        train_or_reuse(dataclasses.replace(base, autoencoder=autoencoder, out=str(run_dir)), data)
        run = load_run(run_dir, device="cpu", data=data)
        sample_images[label], row = _ae_vs_vae_row(label, run, draws)
        rows.append(row)
    meta = base.as_dict() | {"draws": draws}
    _save(out, "ae_vs_vae", meta, rows)
    _markdown(
        out / "ae_vs_vae.md",
        f"{base.dataset}, {base.network} {base.hidden}, z={base.z_dim}, {base.epochs} "
        "epochs; test set",
        [
            ("model", "model", ""),
            ("distortion_at_mean", "reconstruction -log p(x|z=mean), nats", ".1f"),
            ("recon_mse", "reconstruction squared error", ".1f"),
            ("recon_fd", "reconstructions: pixel FD to test images", ".1f"),
            ("samples_fd", "decoded random codes: pixel FD to test images", ".1f"),
            ("code_scale", "code sd per dim", ".2f"),
            ("codes_in_prior", "test codes in prior's 99% region", ".0%"),
            ("prior_near_codes", "prior draws near test codes", ".0%"),
        ],
        rows,
    )
    plots.side_by_side(
        sample_images, data.shape, out / "random_codes.png", "decoded random codes z ~ N(0, I)"
    )
    return rows


# --- posterior collapse -------------------------------------------------------------------------

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
    meta = base.as_dict()
    _save(out, "posterior_collapse", meta, rows)
    _markdown(
        out / "posterior_collapse.md",
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
        rows,
    )
    plots.activity_profiles(
        rows, out / "active_units.png", f"{base.dataset}: activity of each latent dimension"
    )
    return rows


# --- command lines ------------------------------------------------------------------------------


def _base_parser(description: str, out: str, epochs: int, z_dim: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--dataset", default="mnist-sample")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--z-dim", type=int, default=z_dim)
    p.add_argument("--hidden", type=int, nargs="+", default=[400])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=out)
    return p


def _base_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        epochs=args.epochs,
        z_dim=args.z_dim,
        hidden=tuple(args.hidden),
        seed=args.seed,
        device=args.device,
        progress=False,
    )


def beta_sweep_main(argv: Sequence[str] | None = None) -> None:
    p = _base_parser("beta sweep: the rate-distortion curve", "runs/beta-sweep", 50, 16)
    p.add_argument(
        "--betas", type=float, nargs="+", default=[0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
    )
    args = p.parse_args(argv)
    beta_sweep(args.out, args.betas, _base_config(args))
    print((Path(args.out) / "beta_sweep.md").read_text())


def ae_vs_vae_main(argv: Sequence[str] | None = None) -> None:
    args = _base_parser("autoencoder vs VAE, same networks", "runs/ae-vs-vae", 50, 16).parse_args(
        argv
    )
    ae_vs_vae(args.out, _base_config(args))
    print((Path(args.out) / "ae_vs_vae.md").read_text())


def posterior_collapse_main(argv: Sequence[str] | None = None) -> None:
    args = _base_parser(
        "posterior collapse and its remedies", "runs/posterior-collapse", 50, 32
    ).parse_args(argv)
    posterior_collapse(args.out, _base_config(args))
    print((Path(args.out) / "posterior_collapse.md").read_text())
