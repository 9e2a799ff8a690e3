"""NumPyro's SVI on the benchmark's VAE: ``numpyro-scan``, a whole epoch in one jitted function,
and ``numpyro-step``, a jitted ``svi.update`` called per batch from Python.

The model and guide are the torch paths' MLP VAE, all inside ``plate("data", N)``:

    z ~ N(0, I),   x | z ~ Bernoulli(logits = decoder(z)),
    q(z|x) = N(loc(x), softplus(raw(x)) + 1e-5),   (loc, raw) = encoder(x),

the encoder data_dim -> hidden... -> 2 z_dim, the decoder z_dim -> reversed hidden -> data_dim,
ReLU between layers, weights and biases drawn as torch's ``nn.Linear`` draws them (uniform in
+-1/sqrt(fan_in)) from ``opts["seed"]``, trained by ``SVI(Trace_ELBO)`` (one particle, whatever
``--estimator`` the pyro-vae paths take) with ``numpyro.optim.Adam``. Each epoch binarizes the
whole training set (``uniform < x``), permutes it and sees every image once: the full batches,
then the last partial one.

Both run on JAX's CPU device (``--device cuda`` is refused for them) with XLA's own threads.
JAX and NumPyro are an optional extra (``pip install 'pyro-vae[numpyro]'``), imported only
when a path is built or its availability asked, so ``import pyro_vae`` never needs them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import torch

from pyro_vae.data import ImageData

PATH_NAMES = ("numpyro-scan", "numpyro-step")
ELBO_ESTIMATORS = ("trace", "mean-field", "auto")  # the one-sample ELBOs Trace_ELBO matches
INSTALL = "pip install 'pyro-vae[numpyro]'"


def why_not(opts: dict) -> str | None:
    """Why the NumPyro paths cannot run with these options here (None: they can)."""
    if opts["estimator"] not in ELBO_ESTIMATORS:
        return f"NumPyro's paths train by Trace_ELBO only, not --estimator {opts['estimator']}"
    if torch.device(opts["device"]).type != "cpu":
        return "NumPyro's paths run on the CPU only"
    for module, label in (("jax", "JAX"), ("numpyro", "NumPyro")):
        try:
            importlib.import_module(module)
        except ImportError:
            return f"{label} is not installed ({INSTALL})"
    return None


def versions() -> dict[str, str]:
    """The versions of JAX and NumPyro, and the device the paths run on."""
    import jax
    import numpyro

    return {"jax": jax.__version__, "numpyro": numpyro.__version__, "jax_device": "cpu"}


def init_layers(key: Any, sizes: Sequence[int], prefix: str) -> dict[str, Any]:
    """Weights (in, out) and biases of the layers sizes[i] -> sizes[i + 1], each uniform in
    +-1/sqrt(in) as ``nn.Linear`` draws them."""
    import jax

    params = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        key, k_w, k_b = jax.random.split(key, 3)
        b = n_in**-0.5
        params[f"{prefix}_w{i}"] = jax.random.uniform(k_w, (n_in, n_out), minval=-b, maxval=b)
        params[f"{prefix}_b{i}"] = jax.random.uniform(k_b, (n_out,), minval=-b, maxval=b)
    return params


def mlp(params: dict[str, Any], prefix: str, layers: int, h: Any) -> Any:
    """h through ``layers`` linear layers (h @ W + b), ReLU between them."""
    import jax

    for i in range(layers):
        h = h @ params[f"{prefix}_w{i}"] + params[f"{prefix}_b{i}"]
        if i < layers - 1:
            h = jax.nn.relu(h)
    return h


def encode(params: dict[str, Any], layers: int, x: Any) -> tuple[Any, Any]:
    """q(z|x)'s (loc, scale): (loc, raw) = encoder(x), scale = softplus(raw) + 1e-5."""
    import jax

    loc, raw = jax.numpy.split(mlp(params, "enc", layers, x), 2, axis=-1)
    return loc, jax.nn.softplus(raw) + 1e-5


def _model_and_guide(init: dict[str, Any], layers: int, z_dim: int) -> tuple[Callable, Callable]:
    """The VAE's model (decoder parameters) and guide (encoder parameters) as NumPyro
    functions of a batch x, shape (N, data_dim)."""
    import numpyro
    import numpyro.distributions as dist

    def params(prefix: str) -> dict[str, Any]:
        return {k: numpyro.param(k, v) for k, v in init.items() if k.startswith(prefix)}

    def model(x: Any) -> None:
        decoder = params("dec")
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([z_dim]).to_event(1))
            logits = mlp(decoder, "dec", layers, z)
            numpyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    def guide(x: Any) -> None:
        encoder = params("enc")
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("z", dist.Normal(*encode(encoder, layers, x)).to_event(1))

    return model, guide


class NumPyroPath:
    """SVI state, the training images as a JAX array on the CPU, and the epoch's random key;
    ``epoch()`` trains one epoch and returns its mean loss per image (the result ready)."""

    def __init__(self, data: ImageData, opts: dict) -> None:
        reason = why_not(opts)
        if reason is not None:
            raise ValueError(reason)
        import jax
        import numpyro
        from numpyro.infer import SVI, Trace_ELBO

        self.cpu = jax.devices("cpu")[0]
        self.x = jax.device_put(data.train_x.detach().cpu().float().numpy(), self.cpu)
        self.n, data_dim = self.x.shape
        self.batch_size = opts["batch_size"]
        hidden, z_dim = list(opts["hidden"]), opts["z_dim"]
        k_enc, k_dec, k_svi, key = jax.random.split(jax.random.PRNGKey(opts["seed"]), 4)
        layers = jax.jit(init_layers, static_argnums=(1, 2))  # one compilation, not one per op
        init = layers(k_enc, (data_dim, *hidden, 2 * z_dim), "enc")
        init |= layers(k_dec, (z_dim, *reversed(hidden), data_dim), "dec")
        model, guide = _model_and_guide(init, len(hidden) + 1, z_dim)
        self.svi = SVI(model, guide, numpyro.optim.Adam(opts["lr"]), Trace_ELBO())
        x0 = jax.numpy.zeros((self.batch_size, data_dim), self.x.dtype)
        state = jax.jit(lambda k, x, p: self.svi.init(k, x, init_params=p))(k_svi, x0, init)
        # committed to the device as the jitted functions' outputs are: the same arguments
        # from the first call on, so the warm-up epoch's compilation is the only one
        self.state, self.key = jax.device_put((state, key), self.cpu)
        self.build_seconds = 0.0

    def params(self) -> dict[str, Any]:
        return self.svi.get_params(self.state)

    def _epoch_data(self, x: Any, key: Any) -> Any:
        """The training set binarized afresh (uniform < x) and permuted."""
        import jax

        k_bin, k_perm = jax.random.split(key)
        binary = (jax.random.uniform(k_bin, x.shape) < x).astype(x.dtype)
        return binary[jax.random.permutation(k_perm, x.shape[0])]

    def _next_key(self) -> Any:
        import jax

        self.key, key = jax.random.split(self.key)
        return key


class NumPyroScanPath(NumPyroPath):
    """A whole epoch in one jitted function: ``lax.scan`` of ``svi.update`` over the full
    batches, then one ``svi.update`` for the last partial batch."""

    def __init__(self, data: ImageData, opts: dict) -> None:
        super().__init__(data, opts)
        import jax

        self._epoch = jax.jit(self._train_epoch)

    def _train_epoch(self, state: Any, x: Any, key: Any) -> tuple[Any, Any]:
        import jax

        x_epoch = self._epoch_data(x, key)
        full = self.n // self.batch_size * self.batch_size
        batches = x_epoch[:full].reshape(-1, self.batch_size, x.shape[1])
        state, losses = jax.lax.scan(self.svi.update, state, batches)
        total = losses.sum()
        if full < self.n:
            state, last = self.svi.update(state, x_epoch[full:])
            total = total + last
        return state, total

    def epoch(self) -> float:
        import jax

        self.state, total = jax.block_until_ready(self._epoch(self.state, self.x, self._next_key()))
        return float(total) / self.n


class NumPyroStepPath(NumPyroPath):
    """``jax.jit(svi.update)`` called per batch from Python, the epoch's data prepared by one
    jitted function."""

    def __init__(self, data: ImageData, opts: dict) -> None:
        super().__init__(data, opts)
        import jax

        self._update = jax.jit(self.svi.update)
        self._prepare = jax.jit(self._epoch_data)

    def epoch(self) -> float:
        import jax
        import jax.numpy as jnp

        x_epoch = self._prepare(self.x, self._next_key())
        losses = []
        for start in range(0, self.n, self.batch_size):
            self.state, loss = self._update(self.state, x_epoch[start : start + self.batch_size])
            losses.append(loss)
        self.state, total = jax.block_until_ready((self.state, jnp.stack(losses).sum()))
        return float(total) / self.n
