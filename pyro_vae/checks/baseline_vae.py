"""The baseline users compare against: a VAE trained by a plain PyTorch loop, no Pyro.

This is the loss people write by hand (Kingma & Welling, 2014, appendix B; PyTorch's
``examples/vae``): Bernoulli pixels and a standard normal prior,

    loss(x) = BCE_with_logits(decoder(z), x).sum() + 0.5 * sum(mu^2 + s^2 - 1 - log s^2),
    z = mu + s * eps,

with the same networks, data, batching and optimizer as :func:`pyro_vae.train`, so the two can be
compared number for number (``pyro-vae study handwritten``) and timed side by side
(``python -m benchmarks.compare``). For the importance-weighted bound (Burda et al., 2016) the same
networks give the vectorised K-particle loss of :func:`handwritten_iwae_loss`.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Binarizer, ImageData
from ..model.nets import NETWORKS

IWAE_GRADIENTS = ("standard", "stl", "dreg")


def handwritten_loss(
    encoder: nn.Module, decoder: nn.Module, x: torch.Tensor, eps: torch.Tensor | None = None
) -> torch.Tensor:
    """-ELBO summed over the batch, analytic KL, one reparameterised sample per image."""
    mu, s = encoder(x)
    if eps is None:
        eps = torch.randn_like(mu)
    logits = decoder(mu + s * eps)
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kld = 0.5 * torch.sum(mu**2 + s**2 - 1 - 2 * torch.log(s))
    return bce + kld


def handwritten_iwae_loss(
    encoder: nn.Module,
    decoder: nn.Module,
    x: torch.Tensor,
    particles: int,
    grad: str = "standard",
    eps: torch.Tensor | None = None,
) -> torch.Tensor:
    """-sum_b IWAE_K(x_b), K = ``particles``, all K particles in one pass of each network:

        z_kb = mu_b + s_b eps_kb,   eps of shape (K, B, z_dim)
        log w_kb = log Bern(x_b | decoder(z_kb)) + log N(z_kb; 0, I) - log N(z_kb; mu_b, s_b)
        loss = -sum_b logsumexp_k log w_kb + B log K.

    ``grad`` picks the encoder's gradient (the decoder's is the plain one under all three);
    with w~_kb = softmax_k log w_kb:
      standard: the gradient of the loss;
      stl:      log q with mu, s held constant, so the encoder's gradient flows through z only:
                -sum w~ d(log w)/dz dz/dphi (Roeder et al., 2017);
      dreg:     the same with each particle's term weighted by w~^2 instead of w~ (Tucker et
                al., 2019, eq. 6): the gradient reaching z is multiplied by w~ on its way back.
    """
    if grad not in IWAE_GRADIENTS:
        raise ValueError(f"unknown IWAE gradient {grad!r}; choose one of {IWAE_GRADIENTS}")
    mu, s = encoder(x)
    if eps is None:
        eps = torch.randn(particles, *mu.shape, dtype=mu.dtype, device=mu.device)
    z = mu + s * eps
    logits = decoder(z)
    bce = F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
    log_px = -bce.sum(-1)
    q_loc, q_scale = (mu, s) if grad == "standard" else (mu.detach(), s.detach())
    # log N(z; 0, I) - log N(z; q_loc, q_scale): the 0.5 log(2 pi) terms cancel
    log_pq = 0.5 * (((z - q_loc) / q_scale) ** 2 - z**2) + torch.log(q_scale)
    log_w = log_px + log_pq.sum(-1)
    if grad == "dreg" and z.requires_grad:
        w = torch.softmax(log_w.detach(), dim=0).unsqueeze(-1)
        z.register_hook(lambda g: g * w)
    return -(torch.logsumexp(log_w, dim=0) - math.log(particles)).sum()


@torch.no_grad()
def handwritten_test_neg_elbo(
    encoder: nn.Module, decoder: nn.Module, x: torch.Tensor, batch_size: int = 1000
) -> float:
    total = 0.0
    for start in range(0, x.shape[0], batch_size):
        total += float(handwritten_loss(encoder, decoder, x[start : start + batch_size]))
    return total / x.shape[0]


class HandwrittenVAE:
    """The hand-written training loop, one epoch at a time: data as tensors on the device,
    index-gathered batches, default ``torch.optim.Adam``. The loss is BCE + analytic KL
    (:func:`handwritten_loss`), or with ``particles`` = K the vectorised IWAE_K loss with the
    ``grad`` estimator (:func:`handwritten_iwae_loss`)."""

    def __init__(
        self,
        data: ImageData,
        *,
        network: str = "mlp",
        hidden: tuple[int, ...] = (400,),
        z_dim: int = 16,
        batch_size: int = 128,
        lr: float = 1e-3,
        seed: int = 0,
        binarize: str = "dynamic",
        particles: int | None = None,
        grad: str = "standard",
    ) -> None:
        if particles is None and grad != "standard":
            raise ValueError(f"grad {grad!r} needs the IWAE loss: give particles")
        self.particles, self.grad = particles, grad
        torch.manual_seed(seed)
        self.device = data.train_x.device
        self.binarizer = Binarizer(binarize, data, seed=seed)
        # the MLP's hidden sizes, where the network has them (as build_vae routes them)
        sizes = {"hidden": hidden} if "hidden" in NETWORKS.options(network) else {}
        encoder, decoder = NETWORKS.create(network, data.shape, z_dim, **sizes)
        self.encoder, self.decoder = encoder.to(self.device), decoder.to(self.device)
        params = list(self.encoder.parameters()) + list(self.decoder.parameters())
        self.optimizer = torch.optim.Adam(params, lr=lr)
        self.perm_generator = torch.Generator(device=self.device).manual_seed(seed)
        self.batch_size = batch_size
        self.n = data.train_x.shape[0]

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The batch's loss, summed over its images."""
        if self.particles is None:
            return handwritten_loss(self.encoder, self.decoder, x)
        return handwritten_iwae_loss(self.encoder, self.decoder, x, self.particles, self.grad)

    def epoch(self) -> tuple[float, float]:
        """Train one epoch; returns (mean loss per image, training seconds)."""
        x_epoch = self.binarizer.train_x()
        perm = torch.randperm(self.n, generator=self.perm_generator, device=self.device)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        total = torch.zeros((), device=self.device)
        for start in range(0, self.n, self.batch_size):
            x = x_epoch[perm[start : start + self.batch_size]]
            loss = self.loss(x)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.detach()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return total.item() / self.n, time.perf_counter() - t0


def train_handwritten(
    data: ImageData,
    *,
    network: str = "mlp",
    hidden: tuple[int, ...] = (400,),
    z_dim: int = 16,
    epochs: int = 50,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    binarize: str = "dynamic",
) -> dict:
    """Train the hand-written VAE; returns networks, per-epoch metrics and seconds per epoch."""
    model = HandwrittenVAE(
        data,
        network=network,
        hidden=hidden,
        z_dim=z_dim,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        binarize=binarize,
    )
    history = []
    for epoch in range(epochs):
        train_loss, seconds = model.epoch()
        test = handwritten_test_neg_elbo(model.encoder, model.decoder, model.binarizer.test_x)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "test_neg_elbo": test,
                "train_seconds": seconds,
            }
        )
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"hand-written loss became non-finite in epoch {epoch + 1}")
    timed = history[1:] or history
    return {
        "encoder": model.encoder,
        "decoder": model.decoder,
        "metrics": history,
        "test_neg_elbo": history[-1]["test_neg_elbo"],
        "seconds_per_epoch": sum(r["train_seconds"] for r in timed) / len(timed),
        "test_x": model.binarizer.test_x,
    }
