"""Synthetic count data from a known model, to check that a count VAE recovers it.

The generative story, a small single-cell-like experiment (D features, "genes"):

    type  c_n ~ Uniform{0..3},        z_n ~ N(m_c, 0.5^2 I_2)         (2 latent dimensions)
    rho_n = softmax(W z_n + b)                                           (expression proportions)
    l_n ~ LogNormal(log 1000, 0.4)                                       (library size)
    x_ng ~ NB(mean l_n rho_ng, inverse dispersion theta_g),  theta_g log-uniform on [0.5, 20]

Registered as the dataset ``synthetic-counts`` (labels: the cell type), so the count
likelihoods train on it from the command line; :func:`count_data` also returns the truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..densities import negative_binomial_log_density, normal_log_density
from .datasets import DATASETS, ImageData

TYPE_CENTRES = torch.tensor([[1.5, 1.5], [-1.5, 1.5], [-1.5, -1.5], [1.5, -1.5]])
TYPE_SCALE = 0.5


@dataclass
class CountTruth:
    """The parameters and latent codes the synthetic counts were drawn with."""

    weight: torch.Tensor  # (D, 2)
    bias: torch.Tensor  # (D,)
    theta: torch.Tensor  # (D,) inverse dispersion
    train_z: torch.Tensor  # (N_train, 2)
    test_z: torch.Tensor  # (N_test, 2)

    def proportions(self, z: torch.Tensor) -> torch.Tensor:
        return torch.softmax(z @ self.weight.T + self.bias, dim=-1)

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x | z, l = sum x) + log p(z) under the true model, for z of shape (..., N, 2):
        the observed library size conditions the counts, as ``library="observed"`` does."""
        log_mu = torch.log(self.proportions(z)) + torch.log(x.sum(-1, keepdim=True))
        log_nb = negative_binomial_log_density(x, log_mu, self.theta.log())[0].sum(-1)
        scale = torch.tensor(TYPE_SCALE, dtype=z.dtype)
        comp = normal_log_density(z.unsqueeze(-2), TYPE_CENTRES.to(z.dtype), scale).sum(-1)
        log_prior = torch.logsumexp(comp, dim=-1) - math.log(len(TYPE_CENTRES))
        return log_nb + log_prior

    @torch.no_grad()
    def log_likelihood(
        self,
        x: torch.Tensor,
        z: torch.Tensor,
        num_samples: int = 5000,
        seed: int = 0,
        proposal_scales: tuple[float, float] = (0.05, 0.5),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(x_n | l_n) under the true model by importance sampling, with the proposal
        1/2 N(z_n, s_1^2) + 1/2 N(z_n, s_2^2) around the code each cell was drawn with (any
        proposal gives an unbiased estimate of p(x); with 200 genes and ~1,000 counts per
        cell the posterior is narrow and sits near z_n). Returns the per-cell estimate and a
        delta-method standard error."""
        g = torch.Generator().manual_seed(seed)
        scales = torch.tensor(proposal_scales, dtype=x.dtype)
        pick = torch.randint(0, 2, (num_samples, *z.shape[:-1]), generator=g)
        eps = torch.randn(num_samples, *z.shape, generator=g)
        samples = z + scales[pick].unsqueeze(-1) * eps
        comp = -0.5 * ((samples - z) / scales.reshape(2, 1, 1, 1)) ** 2
        comp = comp.sum(-1) - 2 * torch.log(scales.reshape(2, 1, 1) * math.sqrt(2 * math.pi))
        log_q = torch.logsumexp(comp, dim=0) - math.log(2)
        log_w = (
            torch.cat(
                [self.log_joint(x, chunk) for chunk in samples.split(100)]  # (100, N, D) at a time
            )
            - log_q
        )
        estimate = torch.logsumexp(log_w, 0) - math.log(num_samples)
        # delta method: SE(log p-hat) = sd(w) / (sqrt(K) mean(w)) = sqrt(K) sd(w / sum w)
        normalised = torch.softmax(log_w, 0)
        stderr = math.sqrt(num_samples) * normalised.std(0, correction=1)
        return estimate, stderr


def count_data(
    features: int = 200, train: int = 4000, test: int = 1000, seed: int = 0
) -> tuple[ImageData, CountTruth]:
    """Draw the counts (see the module doc) and return them with the truth."""
    with torch.random.fork_rng(devices=[]):  # the same data every time, global RNG untouched
        torch.manual_seed(seed)
        weight = torch.randn(features, 2)
        bias = torch.randn(features)
        theta = torch.exp(math.log(0.5) + torch.rand(features) * math.log(40))

        def cells(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            types = torch.randint(0, len(TYPE_CENTRES), (n,))
            z = TYPE_CENTRES[types] + TYPE_SCALE * torch.randn(n, 2)
            library = torch.exp(math.log(1000) + 0.4 * torch.randn(n, 1))
            mu = library * torch.softmax(z @ weight.T + bias, dim=-1)
            # NB as a Gamma-Poisson mixture: rate ~ Gamma(theta, theta / mu), x ~ Poisson(rate)
            rate = torch.distributions.Gamma(theta, theta / mu).sample()
            return torch.poisson(rate), types, z

        train_x, train_y, train_z = cells(train)
        test_x, test_y, test_z = cells(test)
    keep_train, keep_test = train_x.sum(-1) > 0, test_x.sum(-1) > 0
    data = ImageData(
        train_x[keep_train],
        train_y[keep_train],
        test_x[keep_test],
        test_y[keep_test],
        shape=(features,),
        name="synthetic-counts",
    )
    truth = CountTruth(weight, bias, theta, train_z[keep_train], test_z[keep_test])
    return data, truth


@DATASETS.register("synthetic-counts")
def synthetic_counts() -> ImageData:
    """4,000 + 1,000 cells x 200 genes of negative-binomial counts from a known 2-D latent
    model with four cell types (labels), drawn with a fixed seed (see this module)."""
    return count_data()[0]
