"""The oneDNN product that replaces torch's where it is faster: equal results for every
operand layout, a rewrite that keeps a graph's values, and a timing that draws nothing from
torch's random stream."""

from __future__ import annotations

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from pyro_vae.kernels import matmul_choice
from pyro_vae.kernels.matmul_choice import onednn_available, onednn_mm, use_fastest_matmul

pytestmark = pytest.mark.skipif(not onednn_available(), reason="torch built without oneDNN")


def _layouts() -> dict[str, tuple]:
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    return {
        "plain": (r(7, 5), r(5, 3), None),
        "a transposed": (r(5, 7).t(), r(5, 3), None),
        "b transposed": (r(7, 5), r(3, 5).t(), None),
        "both transposed": (r(5, 7).t(), r(3, 5).t(), None),
        "a row-broadcast": (r(1, 5).expand(7, 5), r(5, 3), None),
        "a sliced": (r(14, 10)[::2, :5], r(5, 3), None),
        "b strided": (r(7, 5), r(5, 6)[:, ::2], None),
        "bias": (r(7, 5), r(5, 3), r(3)),
        "broadcast bias": (r(7, 5), r(5, 3), r(1).expand(3)),
        "k = 1": (r(7, 1), r(1, 3), None),
    }


@pytest.mark.parametrize("layout", list(_layouts()))
def test_onednn_product_equals_torch_for_every_layout(layout):
    """oneDNN's linear reads strides itself; a broadcast (stride-0) bias it misreads, which
    the op makes contiguous (without that, 0.36 off)."""
    a, b, bias = _layouts()[layout]
    expected = a @ b if bias is None else torch.addmm(bias, a, b)
    torch.testing.assert_close(onednn_mm(a, b, bias), expected, rtol=1e-5, atol=1e-5)


def _linear_and_grads(x, w, b):
    y = torch.nn.functional.linear(x, w, b).relu().pow(2).sum()
    return torch.autograd.grad(y, [x, w])


def _graph():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 40, generator=g, requires_grad=True)
    w = torch.randn(30, 40, generator=g, requires_grad=True)
    b = torch.randn(30, generator=g)
    return make_fx(_linear_and_grads)(x, w, b), (x, w, b)


@pytest.mark.parametrize("forced, rewritten", [("onednn", 3), ("torch", 0)])
def test_the_rewrite_keeps_the_graph_values(monkeypatch, forced, rewritten):
    """Forward ``addmm`` and both backward ``mm`` (one of a transposed operand) rewritten,
    the values those of the graph as recorded to float32 rounding; forcing torch leaves it."""
    monkeypatch.setenv(matmul_choice.CHOICE_ENV, forced)
    matmul_choice.onednn_is_faster.cache_clear()
    graph, (x, w, b) = _graph()
    expected = graph(x, w, b)
    assert use_fastest_matmul(graph) == rewritten
    ops = {n.target for n in graph.graph.nodes if n.op == "call_function"}
    assert (torch.ops.pyro_vae.onednn_linear.default in ops) == bool(rewritten)
    for got, want in zip(graph(x, w, b), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    matmul_choice.onednn_is_faster.cache_clear()


def test_timing_the_choice_leaves_torchs_random_stream_alone(monkeypatch):
    """The graph's noise is drawn from torch's global generator right after the choice is
    timed: the timing's operands must come from a generator of their own."""
    monkeypatch.delenv(matmul_choice.CHOICE_ENV, raising=False)
    matmul_choice.onednn_is_faster.cache_clear()
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    matmul_choice.onednn_is_faster(33, 17, 9, False, True)
    torch.testing.assert_close(torch.rand(4), expected, rtol=0, atol=0)
    matmul_choice.onednn_is_faster.cache_clear()
