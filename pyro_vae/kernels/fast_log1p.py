"""log1p(x) as log(1 + x) with its rounding corrected: a graph rewrite for the CPU.

torch's vectorized CPU ``log1p`` is about nine times slower than its ``log``: on a 2-core AMD
EPYC (AVX-512), 128 x 784 float32 values took 590 us against 68 us for ``log(1 + x)``. It is
in every Bernoulli likelihood: ``binary_cross_entropy_with_logits`` is
``max(x, 0) - x y + log1p(exp(-|x|))``, and that one call was 15% of a compiled training
step. Here each float32 ``log1p`` of a graph becomes

    u = 1 + x,    log1p(x) = log(u) - ((u - 1) - x) / u        (u != 1),     x   (u == 1),

the correction of Goldberg (1991, "What every computer scientist should know about
floating-point arithmetic", theorem 4's remark; u - 1 is exact in floating point, and
((u - 1) - x) is the rounding error of 1 + x), which Inductor fuses into one vectorized loop.
It agrees with ``log1p`` to a few float32 ulps (checked in the tests over [-1, 1e30]);
log1p(-1) = -inf and log1p(inf) = inf are kept (a non-finite correction is dropped).
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch._guards import detect_fake_mode

aten = torch.ops.aten


def corrected_log1p(x: torch.Tensor) -> torch.Tensor:
    """log1p(x) by the formula above (the rewrite's arithmetic, for tests and eager use)."""
    u = 1 + x
    ratio = ((u - 1) - x) / u
    correction = torch.where(ratio.abs() < math.inf, ratio, 0.0)
    return torch.where(u == 1, x, torch.log(u) - correction)


def _float32(node: object) -> bool:
    val = getattr(node, "meta", {}).get("val")
    return isinstance(val, torch.Tensor) and val.dtype == torch.float32 and not val.is_cuda


def _caller(graph: torch.fx.Graph):
    """``call(op, *args)``: a new node of ``graph`` whose ``meta["val"]`` is ``op`` applied to
    its arguments' (fake) values, as Inductor's later passes expect."""

    def call(op, *args):
        node = graph.call_function(op, args)
        vals = [a.meta["val"] if isinstance(a, torch.fx.Node) else a for a in args]
        with detect_fake_mode(vals) or contextlib.nullcontext():
            node.meta["val"] = op(*vals)
        return node

    return call


def rewrite_log1p(graph: torch.fx.Graph) -> int:
    """Each float32 CPU ``log1p(x)`` of ``graph`` as :func:`corrected_log1p`'s arithmetic, in
    place; the number rewritten."""
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not aten.log1p.default:
            continue
        (x,) = node.args
        if not _float32(node):
            continue
        with graph.inserting_before(node):
            call = _caller(graph)
            u = call(aten.add.Tensor, x, 1)
            error = call(aten.sub.Tensor, call(aten.sub.Tensor, u, 1), x)
            ratio = call(aten.div.Tensor, error, u)
            finite = call(aten.lt.Scalar, call(aten.abs.default, ratio), math.inf)
            correction = call(aten.where.ScalarOther, finite, ratio, 0.0)
            value = call(aten.sub.Tensor, call(aten.log.default, u), correction)
            new = call(aten.where.self, call(aten.eq.Scalar, u, 1), x, value)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        count += 1
    return count
