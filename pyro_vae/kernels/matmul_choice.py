"""Which library multiplies each matrix shape of a captured graph: chosen by timing both.

torch's CPU wheels multiply matrices with MKL, which runs its AVX-512 kernels on Intel CPUs
only: on an AMD CPU with AVX-512 (Zen 4, Zen 5) it runs its AVX2 kernels, at half the
machine's rate. oneDNN, also in every torch wheel (the ``mkldnn`` ops), picks its kernels by
the instructions the CPU has, not by its vendor, and runs on torch's own threads. Measured on a
2-core AMD EPYC (Zen 5), float32 GFLOP/s of ``mm`` / oneDNN's linear:

    2048 x 2048 x 2048     191 / 428       128 x 784 x 400    176 / 317
    128 x 400 x 784        170 / 285       128 x 50 x 400     106 / 158

On an Intel CPU MKL is often the faster. So for each product shape of a captured graph (m, k,
n, and which operand is a transposed view), :func:`onednn_is_faster` times torch's ``mm`` and
oneDNN's ``_linear_pointwise`` on operands of that layout, once per process, and keeps the
faster; :func:`use_fastest_matmul` then rewrites the graph's ``mm`` and ``addmm`` nodes of a
shape oneDNN won into one op, :func:`onednn_linear`. The graphs are those of the compiled
training step, the compiled log p(x) and the captured AIS transition
(:mod:`pyro_vae.inference.graph_compiler`).

The libraries sum the k products in different orders, so a rewritten graph's results equal
the original's to float32 rounding, not bit for bit.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)
aten = torch.ops.aten
# oneDNN must be this much faster to be taken (short timings move by a few percent)
MARGIN = 0.95
CHOICE_ENV = "PYRO_VAE_MATMUL"  # "torch" or "onednn": one library for every shape
REPEATS = 9


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


@torch.library.custom_op("pyro_vae::onednn_linear", mutates_args=())
def onednn_linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ w^T (+ bias) by oneDNN's linear, which reads either layout of either operand
    without a copy. An op of its own: Inductor lowers oneDNN's linear only with the weight a
    constant of the graph, and here it is an input."""
    if bias is not None:
        bias = bias.contiguous()  # an expanded bias (stride 0) is misread
    return torch.ops.mkldnn._linear_pointwise(x, w, bias, "none", [], "")


@onednn_linear.register_fake
def _(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x.new_empty(x.shape[0], w.shape[0])


def onednn_mm(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b (+ bias) by oneDNN: its linear with w = b^T (a view)."""
    return onednn_linear(a, b.t(), bias)


def _operand(rows: int, cols: int, transposed: bool) -> torch.Tensor:
    """Random operands from a generator of their own: timing must not move torch's global
    random stream, which the graph's noise is then drawn from."""
    g = torch.Generator().manual_seed(rows * 31 + cols)
    if transposed:
        return torch.randn(cols, rows, generator=g).t()
    return torch.randn(rows, cols, generator=g)


def _best_seconds(
    products: tuple[Callable, ...], a: torch.Tensor, b: torch.Tensor, budget: float = 0.1
) -> list[float]:
    """The fastest of up to ``REPEATS`` calls of each product, taken in turn (so that a
    passing load on the machine falls on both), after a warm-up of each."""
    for fn in products:
        fn(a, b)
    best = [float("inf")] * len(products)
    spent = 0.0
    for _ in range(REPEATS):
        for i, fn in enumerate(products):
            t0 = time.perf_counter()
            fn(a, b)
            took = time.perf_counter() - t0
            best[i], spent = min(best[i], took), spent + took
        if spent > budget:
            break
    return best


@functools.cache
def onednn_is_faster(m: int, k: int, n: int, a_transposed: bool, b_transposed: bool) -> bool:
    """Whether oneDNN multiplies (m x k) @ (k x n) operands of this layout faster than torch's
    ``mm`` on this machine, on torch's threads; timed once per process and shape."""
    forced = os.environ.get(CHOICE_ENV)
    if forced in ("torch", "onednn"):
        return forced == "onednn" and onednn_available()
    if not onednn_available() or min(m, k, n) == 0:
        return False
    a, b = _operand(m, k, a_transposed), _operand(k, n, b_transposed)
    ours, theirs = _best_seconds((onednn_mm, torch.mm), a, b)
    faster = ours < MARGIN * theirs
    log.debug(
        "matmul %dx%dx%d (%s): torch %.1f us, oneDNN %.1f us -> %s",
        m, k, n, f"{'T' if a_transposed else 'N'}{'T' if b_transposed else 'N'}",
        theirs * 1e6, ours * 1e6, "oneDNN" if faster else "torch",
    )  # fmt: skip
    return faster


def _is_transposed(t: torch.Tensor) -> bool:
    return t.stride(0) == 1 and t.stride(1) != 1


def _cpu_float32_matrix(node: object) -> torch.Tensor | None:
    val = getattr(node, "meta", {}).get("val")
    if isinstance(val, torch.Tensor) and val.device.type == "cpu" and val.dtype == torch.float32:
        return val if val.dim() == 2 else None
    return None


def _product(node: torch.fx.Node) -> tuple[object, object, object] | None:
    """(bias, a, b) of an ``mm`` (bias None) or of an ``addmm`` whose bias is one row."""
    if node.op != "call_function" or node.kwargs:
        return None
    if node.target is aten.mm.default:
        return (None, *node.args)
    if node.target is aten.addmm.default:
        bias = getattr(node.args[0], "meta", {}).get("val")
        if isinstance(bias, torch.Tensor) and bias.dim() == 1:
            return tuple(node.args)
    return None


def use_fastest_matmul(graph: torch.fx.GraphModule) -> int:
    """Rewrite in place each float32 CPU ``mm(a, b)`` / ``addmm(bias, a, b)`` of ``graph``
    whose shape oneDNN multiplies faster into oneDNN's linear; the number rewritten. Nodes
    without recorded values (``meta["val"]``, which ``make_fx`` records) are left."""
    count = 0
    for node in list(graph.graph.nodes):
        parts = _product(node)
        if parts is None:
            continue
        bias, a, b = parts
        va, vb = _cpu_float32_matrix(a), _cpu_float32_matrix(b)
        if va is None or vb is None:
            continue
        (m, k), n = va.shape, vb.shape[1]
        if not onednn_is_faster(m, k, n, _is_transposed(va), _is_transposed(vb)):
            continue
        with graph.graph.inserting_before(node):
            w = graph.graph.call_function(aten.t.default, (b,))
            w.meta["val"] = vb.t()
            op = torch.ops.pyro_vae.onednn_linear.default
            new = graph.graph.call_function(op, (a, w, bias))
            new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        graph.graph.erase_node(node)
        count += 1
    if count:
        graph.graph.lint()
        graph.recompile()
    return count
