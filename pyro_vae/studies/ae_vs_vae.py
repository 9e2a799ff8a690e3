"""A plain autoencoder beside the VAE: the same networks trained deterministically and as a
VAE, compared by reconstruction and by what decoded random codes look like.

    pyro-vae study ae-vs-vae --out runs/ae-vs-vae

Writes ae_vs_vae.json, ae_vs_vae.md and random_codes.png under OUT.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from ..data import load_dataset
from ..inference import posterior_means
from ..report import plots
from ..training import TrainConfig, load_run
from .harness import at_least, base_config, run_arguments, study, train_or_reuse
from .tables import write_tables


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
    write_tables(
        out,
        "ae_vs_vae",
        base.as_dict() | {"draws": draws},
        rows,
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
    )
    plots.side_by_side(
        sample_images, data.shape, out / "random_codes.png", "decoded random codes z ~ N(0, I)"
    )
    return rows


def _arguments(p: argparse.ArgumentParser) -> None:
    run_arguments(p, "runs/ae-vs-vae", epochs=50, z_dim=16)
    p.add_argument(
        "--draws",
        type=at_least(1),
        default=500,
        help="draws from the prior, decoded and compared with the test codes",
    )


@study("ae-vs-vae", "a deterministic autoencoder beside the VAE, same networks", _arguments)
def run(args: argparse.Namespace) -> int:
    ae_vs_vae(args.out, base_config(args), args.draws)
    print((Path(args.out) / "ae_vs_vae.md").read_text())
    return 0
