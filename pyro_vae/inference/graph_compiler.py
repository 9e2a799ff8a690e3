"""A Pyro program captured once as an ATen graph, then compiled: the mechanism behind the
compiled training step (:mod:`pyro_vae.training.compiled`) and the compiled log p(x)
(:mod:`pyro_vae.inference.particle_chunks`).

Eager Pyro pays for its generality on every call: effect handlers, traces, distribution
objects and plates, all in Python. For a program whose structure does not change from call to
call (a VAE's does not), that work issues the same tensor operations every time. ``make_fx``
(``torch.fx.experimental.proxy_tensor``) runs the program once on proxy tensors and records
those ATen operations (the networks, the sampling noise, the densities, a backward pass if the
program takes one); TorchInductor then fuses the element-wise work into a few loops around the
matrix products. ``torch.compile`` applied to a Pyro program directly breaks the graph at every
sample site (Pyro's messages are TypedDicts Dynamo does not trace), hence ``make_fx``.

The parameters of the modules the program uses are graph *inputs* (read afresh at every call),
not constants baked into the graph, so a captured graph stays right while they train.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator, Sequence

import pyro
import torch
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx
from torch.nn.utils.stateless import _reparametrize_module

from .. import param_store

BACKENDS = ("inductor", "eager")


def owning_modules(*programs: Callable) -> list[nn.Module]:
    """The modules whose parameters the programs read: each program that is a module, or a
    method of one (``vae.model``), once each, in order."""
    owners: list[nn.Module] = []
    for program in programs:
        owner = program if isinstance(program, nn.Module) else getattr(program, "__self__", None)
        if isinstance(owner, nn.Module) and all(owner is not o for o in owners):
            owners.append(owner)
    return owners


class Parameters:
    """The parameters of ``owners`` as one flat list, and a context in which the modules read
    a given list of tensors instead (``torch.nn.utils.stateless``): how a captured graph takes
    them as inputs."""

    def __init__(self, owners: Sequence[nn.Module]) -> None:
        self.owners = list(owners)
        self.names = [[name for name, _ in m.named_parameters()] for m in self.owners]

    def current(self) -> list[torch.Tensor]:
        return [p for m in self.owners for p in m.parameters()]

    @contextlib.contextmanager
    def substituted(self, tensors: Sequence[torch.Tensor]) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            start = 0
            for module, names in zip(self.owners, self.names, strict=True):
                given = dict(zip(names, tensors[start : start + len(names)], strict=True))
                stack.enter_context(_reparametrize_module(module, given))
                start += len(names)
            yield


def capture(fn: Callable, *args: object) -> torch.fx.GraphModule:
    """``fn(*args)`` recorded as an ATen graph. Recording runs the program once: its random
    draws are kept out of the random streams, its proxy tensors out of Pyro's param store, and
    argument validation (which reads tensor values) is off."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    tensors += [t for a in args if isinstance(a, list) for t in a]
    devices = sorted({t.device for t in tensors if t.is_cuda}, key=str)
    with (
        param_store.off(),
        pyro.validation_enabled(False),
        torch.random.fork_rng(devices=devices),
    ):
        try:
            return make_fx(fn)(*args)
        except RuntimeError as err:
            if "data-dependent" not in str(err) and "_local_scalar_dense" not in str(err):
                raise
            raise CaptureError(
                "this model/guide pair cannot be recorded as one fixed graph: it reads tensor "
                "values while it runs (as sampling a discrete site does); run it uncompiled"
            ) from err


class CaptureError(ValueError):
    """A program that cannot be recorded as a fixed graph."""


def split_addmm(graph: torch.fx.Graph) -> None:
    """Each ``addmm(bias, a, b)`` of the graph as ``mm(a, b) + bias``, in place. Inductor lowers
    an ``addmm`` on the CPU by first copying the broadcast bias into the output and then adding
    the product to it: a full pass over the output (for log p(x)'s decoder, 7.8 MB per chunk;
    in a training step, 10 µs for each of five layers) that, split, becomes part of the fused
    loop that reads the product anyway (the ReLU, the likelihood)."""
    aten = torch.ops.aten
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target is aten.addmm.default and not node.kwargs:
            bias, a, b = node.args
            with graph.inserting_before(node):
                product = graph.call_function(aten.mm.default, (a, b))
                summed = graph.call_function(aten.add.Tensor, (product, bias))
            node.replace_all_uses_with(summed)
            graph.erase_node(node)


@functools.cache
def split_addmm_pass() -> Callable[[torch.fx.Graph], None]:
    """The Inductor pass of :func:`split_addmm`, its class made on first use: Inductor's base
    class imports Dynamo and Inductor (over a second), which a command that compiles nothing
    should not wait for."""
    from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files

    from ..kernels import fast_log1p

    class SplitAddmm(CustomGraphPass):
        """:func:`split_addmm` as an Inductor pass run after its own rewrites
        (``post_grad_custom_post_pass``): those fuse every ``mm`` followed by a bias add back
        into an ``addmm`` on the CPU, so a split made before compiling did not survive. It
        also rewrites ``log1p`` (:mod:`pyro_vae.kernels.fast_log1p`), which only appears once
        Inductor has decomposed the likelihoods."""

        def __call__(self, graph: torch.fx.Graph) -> None:
            split_addmm(graph)
            fast_log1p.rewrite_log1p(graph)

        def uuid(self) -> bytes:
            return get_hash_for_files((__file__, fast_log1p.__file__))

    return SplitAddmm()


def compile_graph(
    graph: torch.fx.GraphModule,
    backend: str = "inductor",
    cuda_graphs: bool = False,
    fastest_matmul: bool | None = None,
) -> Callable:
    """The captured graph compiled by TorchInductor (``backend="eager"``: run as recorded,
    quick to build, for tests). ``fastest_matmul`` (by default with Inductor): each float32
    CPU product of a shape OpenBLAS multiplies faster than torch on this machine calls
    OpenBLAS (:mod:`pyro_vae.kernels.matmul_choice`, timed on first use of the shape; the
    results then equal the graph's to float32 rounding). ``cuda_graphs``: also replay it as a
    CUDA graph
    (``mode="reduce-overhead"``). Otherwise the random numbers are drawn by the eager kernels
    (``fallback_random``), so that the compiled program sees the same noise as the eager one
    for the same seed (Inductor's own draw was also slower on the CPU: a Philox engine and a
    Box-Muller transform per element, scalar)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if cuda_graphs and backend != "inductor":
        raise ValueError("CUDA graphs are captured by the inductor backend")
    if fastest_matmul if fastest_matmul is not None else backend == "inductor":
        from ..kernels.matmul_choice import use_fastest_matmul

        use_fastest_matmul(graph)
    if backend == "eager":
        return graph
    if cuda_graphs:
        return torch.compile(graph, mode="reduce-overhead", dynamic=False)
    options = {
        "fallback_random": True,
        "post_grad_custom_post_pass": split_addmm_pass(),
        # no Python check of each extern kernel's output (the oneDNN products): 2-5 us each,
        # of shapes the capture has fixed
        "size_asserts": False,
        "alignment_asserts": False,
    }
    return InductorGraph(graph, options)


class _NoCudaRuntimeNotice(logging.Filter):
    """Drops torch's ``No CUDA runtime is found, using CUDA_HOME=...``: Inductor imports
    ``torch.utils.cpp_extension`` for the C++ headers of its CPU kernels, and that import says
    so on any machine with a CUDA toolkit but no GPU. It is about CUDA extensions, which a CPU
    kernel never builds: nothing a user of a CPU run could act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No CUDA runtime is found")


def quiet_cuda_home_notice() -> None:
    """Keep that one notice of ``torch.utils.cpp_extension`` out of the output (its other
    messages pass); idempotent."""
    log = logging.getLogger("torch.utils.cpp_extension")
    if not any(isinstance(f, _NoCudaRuntimeNotice) for f in log.filters):
        log.addFilter(_NoCudaRuntimeNotice())


class InductorGraph:
    """A captured graph compiled by TorchInductor on its first call, for that call's shapes,
    with ``torch._inductor.compile`` (Inductor's entry point for graphs captured without
    Dynamo). ``torch.compile`` would wrap the same compiled code in a Dynamo frame whose
    guards are evaluated at every call: 0.05-0.1 ms of a 2 ms training step on the CPU, for
    checks the callers already make (they build one graph per input shape)."""

    def __init__(self, graph: torch.fx.GraphModule, options: dict[str, object]) -> None:
        self.graph = graph
        self.options = options
        self._compiled: Callable | None = None

    def __call__(self, *args: object) -> object:
        if self._compiled is None:
            import torch._inductor

            quiet_cuda_home_notice()
            self._compiled = torch._inductor.compile(self.graph, list(args), self.options)
        return self._compiled(*args)
