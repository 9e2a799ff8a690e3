"""log1p as a corrected log(1 + x): accurate to float32 rounding everywhere, kept at its edge
values, and the same in a graph rewritten by the Inductor pass."""

from __future__ import annotations

import math

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from pyro_vae.kernels.fast_log1p import corrected_log1p, rewrite_log1p

EPS = torch.finfo(torch.float32).eps


def _inputs() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    edges = torch.tensor([-0.999, -0.5, 0.0, 1e-30, 1e-10, 1e-7, 3e-6, 1e-4, 0.1, 1, 10, 1e30])
    tiny = torch.exp(torch.empty(5000).uniform_(-40, 0, generator=g))  # exp(-|x|) of logits
    return torch.cat([edges, tiny, torch.rand(5000, generator=g) * 2 - 1, -tiny.clamp(max=0.99)])


def _relative_error_in_eps(got: torch.Tensor, x: torch.Tensor) -> float:
    exact = torch.log1p(x.double())
    return float(((got.double() - exact).abs() / exact.abs().clamp_min(1e-300)).max() / EPS)


def test_corrected_log1p_is_within_two_ulps_where_log_alone_is_not():
    """log(1 + x) alone loses all digits for x below float32's eps (measured: the relative
    error is 1/eps there); the correction brings it within two ulps."""
    x = _inputs()
    assert _relative_error_in_eps(corrected_log1p(x), x) < 2
    assert _relative_error_in_eps(torch.log(1 + x), x) > 1e5


def test_edge_values_are_kept():
    x = torch.tensor([-1.0, math.inf, math.nan, -2.0])
    got = corrected_log1p(x)
    assert got[0] == -math.inf and got[1] == math.inf
    assert torch.isnan(got[2]) and torch.isnan(got[3])


def test_the_graph_rewrite_computes_the_corrected_log1p():
    """Every float32 ``log1p`` node replaced, the graph's values the formula's."""

    def f(x):
        return torch.log1p(torch.exp(-x.abs())), torch.log1p(x * x)

    x = _inputs()[:2000]
    graph = make_fx(f)(x)
    assert rewrite_log1p(graph.graph) == 2
    graph.recompile()
    assert torch.ops.aten.log1p.default not in {n.target for n in graph.graph.nodes}
    for got, want in zip(graph(x), f(x), strict=True):
        torch.testing.assert_close(got, want, rtol=2 * EPS, atol=0)
