"""The yardstick of the semi-supervised VAE: the same classifier network as M2's q(y | x),
trained by cross-entropy on the labelled images alone.

If M2's q(y | x) does not beat this, the unlabelled images and the generative model have not
helped. Training inputs are binarized afresh at every step, as M2's are each epoch (dynamic
binarization), and the test images are the runs' own fixed binarization.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..model.class_variable import classifier_network


def train_labelled_only(
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: int,
    hidden: Sequence[int],
    seed: int,
    steps: int = 2000,
    batch_size: int = 128,
    lr: float = 1e-3,
    binarize: bool = True,
) -> torch.nn.Module:
    """An MLP classifier (M2's ``classifier_network``) trained on ``images`` (grey levels in
    [0, 1], one row each) and their ``labels`` for ``steps`` Adam steps of ``batch_size``
    images drawn with replacement (all of them when fewer)."""
    generator = torch.Generator(device=images.device).manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = classifier_network(images.shape[1], classes, hidden).to(images.device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    n = images.shape[0]
    for _ in range(steps):
        if n <= batch_size:
            index = torch.arange(n, device=images.device)
        else:
            index = torch.randint(n, (batch_size,), generator=generator, device=images.device)
        x = images[index]
        if binarize:
            x = torch.bernoulli(x, generator=generator)
        loss = F.cross_entropy(net(x), labels[index].long())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return net.eval()


@torch.no_grad()
def test_error(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of ``images`` the classifier gets wrong."""
    predicted = torch.cat(
        [net(images[i : i + 1000]).argmax(-1) for i in range(0, len(images), 1000)]
    )
    return float((predicted != labels.long()).double().mean())
