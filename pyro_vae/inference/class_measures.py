"""What a model with a class variable is measured by: how well its q(y | x) classifies
(semi-supervised) or clusters (unsupervised) the test images."""

from __future__ import annotations

import torch


def classification_error(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of rows whose predicted class differs from the label."""
    return float((predicted.cpu() != labels.cpu()).double().mean())


def cluster_matching(assigned: torch.Tensor, labels: torch.Tensor) -> dict[int, int]:
    """The best matching of clusters to classes: one-to-one (the Hungarian algorithm on the
    contingency table, scipy's ``linear_sum_assignment``) when there are no more clusters
    than classes; with more clusters, each goes to its most frequent class (many-to-one, as
    clustering papers score it)."""
    assigned, labels = assigned.cpu().long(), labels.cpu().long()
    clusters = int(assigned.max()) + 1
    classes = int(labels.max()) + 1
    table = torch.zeros(clusters, classes, dtype=torch.long)
    table.index_put_((assigned, labels), torch.ones_like(assigned), accumulate=True)
    if clusters <= classes:
        from scipy.optimize import linear_sum_assignment  # (0.4 s to import: only here)

        rows, cols = linear_sum_assignment(table.numpy(), maximize=True)
        return {int(r): int(c) for r, c in zip(rows, cols, strict=True)}
    return {k: int(table[k].argmax()) for k in range(clusters)}


def cluster_accuracy(assigned: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of rows whose cluster, matched to a class by :func:`cluster_matching`, is
    their label's."""
    matching = cluster_matching(assigned, labels)
    mapped = torch.tensor([matching.get(int(k), -1) for k in assigned.cpu().tolist()])
    return float((mapped == labels.cpu().long()).double().mean())
