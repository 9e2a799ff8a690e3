"""Building a model from names: ``build_vae`` assembles the one-layer VAE from its parts, and
``MODELS`` holds the model structures (``vae``, ``two-layer``, the class-latent ``joint`` and
``m2``, the pose-invariant ``invariant``) that ``build_model`` picks from.

Every option goes to the parts that take it (:mod:`pyro_vae.model.option_routing`); one that no part
takes is an error, so a misspelt ``hiden=(64,)`` is refused rather than ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..registry import Registry, takes
from .class_variable import build_joint_vae, build_semi_supervised_vae
from .conditional import ConditionalVAE
from .guides import GUIDES
from .invariant import build_invariant_vae
from .likelihoods import LIKELIHOODS
from .nets import NETWORKS, LogInputEncoder
from .option_routing import PART_REGISTRIES, route
from .priors import PRIORS
from .two_layer import build_two_layer_vae
from .vae import VAE, Autoencoder

MODELS: Registry[VAE] = Registry("model")


def check_shape(data_shape: Sequence[int]) -> None:
    """A data shape is a non-empty tuple of positive sizes, (C, H, W) for images or (D,)."""
    shape = tuple(data_shape) if isinstance(data_shape, Sequence) else ()
    if not shape or not all(isinstance(d, int) and d >= 1 for d in shape):
        raise ValueError(
            f"a data shape is a tuple of positive sizes such as (1, 28, 28); got {data_shape!r}"
        )


@MODELS.register("vae")
def build_vae(
    data_shape: Sequence[int],
    context_dim: int = 0,
    *,
    network: str = "mlp",
    likelihood: str = "bernoulli",
    prior: str = "normal",
    guide: str = "diagonal",
    z_dim: int = 16,
    beta: float = 1.0,
    autoencoder: bool = False,
    context: str = "none",
    encoder: nn.Module | None = None,
    decoder: nn.Module | None = None,
    **options: object,
) -> VAE:
    """Assemble a VAE from registered names; ``options`` go to whichever parts take them
    (``hidden`` for the MLP, ``sigma`` / ``sigma_floor`` for Gaussian likelihoods,
    ``components`` for the mixture prior, ``library`` for the count likelihoods,
    ``pseudo_inputs`` for the VampPrior, ``rank`` / ``flows`` / ``flow_hidden`` for the
    guides). ``context`` other than "none" builds a conditional VAE whose data rows carry
    ``context_dim`` context values after the pixels (:mod:`pyro_vae.model.conditional`);
    ``autoencoder`` builds the deterministic :class:`Autoencoder` with the same networks.
    ``encoder`` and ``decoder``: your own networks instead of the ``network`` family's
    (:func:`_check_networks` says what they map)."""
    check_shape(data_shape)
    own_networks = _own_networks(encoder, decoder)
    chosen = {"likelihood": likelihood, "prior": prior, "guide": guide}
    parts = route("vae", options, **chosen, **({} if own_networks else {"network": network}))
    if autoencoder and guide != "diagonal":
        raise ValueError("the autoencoder's code is a point: --guide means nothing for it")
    if autoencoder and beta != 1.0:
        raise ValueError("the autoencoder has no KL term: --beta means nothing for it")
    conditional = context != "none"
    if conditional and not takes(NETWORKS.get(network), "context_dim"):
        raise ValueError(f"the {network} network cannot read a context: use --network mlp")
    data_dim = int(torch.Size(data_shape).numel())
    lik = LIKELIHOODS.create(likelihood, data_dim, **parts["likelihood"])
    pri = PRIORS.create(prior, z_dim, offer={"data_dim": data_dim + context_dim}, **parts["prior"])
    if own_networks:
        _check_networks(encoder, decoder, data_dim, z_dim, lik.params_per_pixel)
    else:
        net_facts = {"out_per_pixel": lik.params_per_pixel}
        if conditional:
            net_facts["context_dim"] = context_dim
        encoder, decoder = NETWORKS.create(
            network, data_shape, z_dim, offer=net_facts, **parts["network"]
        )
    if lik.log_input:
        encoder = LogInputEncoder(encoder)
    pri.attach(encoder)
    q = GUIDES.create(guide, z_dim, offer={"feature_dim": encoder.feature_dim}, **parts["guide"])
    if autoencoder:
        return Autoencoder(encoder, decoder, lik, pri)
    if conditional:
        return ConditionalVAE(
            encoder, decoder, lik, pri, beta=beta, q=q,
            data_dim=data_dim, context_dim=context_dim, context=context,
        )  # fmt: skip
    return VAE(encoder, decoder, lik, pri, beta=beta, q=q)


def _own_networks(encoder: nn.Module | None, decoder: nn.Module | None) -> bool:
    if (encoder is None) != (decoder is None):
        raise ValueError("give both encoder= and decoder=, or neither")
    return encoder is not None


def _check_networks(
    encoder: nn.Module, decoder: nn.Module, data_dim: int, z_dim: int, per_pixel: int
) -> None:
    """The user's networks, tried on two zero rows: the encoder maps rows (N, D) to the
    (loc, scale) of q(z|x), each (N, z_dim); the decoder maps z (N, z_dim) to the likelihood's
    parameters (N, params_per_pixel D) (a conv net reshapes rows to (C, H, W) itself).
    Otherwise one line says which network returned what."""
    for name, net in (("encoder", encoder), ("decoder", decoder)):
        if not isinstance(net, nn.Module):
            raise ValueError(f"{name}= takes a torch.nn.Module, not a {type(net).__name__}")
    try:
        param = next(encoder.parameters())
        kind = {"device": param.device, "dtype": param.dtype}
    except StopIteration:
        kind = {}
    with torch.no_grad():
        out = encoder(torch.zeros(2, data_dim, **kind))
        if not (isinstance(out, tuple) and len(out) == 2 and out[0].shape == (2, z_dim)):
            shapes = [tuple(o.shape) for o in out] if isinstance(out, tuple) else type(out)
            raise ValueError(
                f"the encoder must map rows (N, {data_dim}) to (loc, scale), each (N, {z_dim}); "
                f"it returned {shapes}"
            )
        out = decoder(torch.zeros(2, z_dim, **kind))
        if not torch.is_tensor(out) or out.shape != (2, per_pixel * data_dim):
            shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise ValueError(
                f"the decoder must map z (N, {z_dim}) to (N, {per_pixel * data_dim}) "
                f"likelihood parameters; it returned {shape}"
            )
    if not hasattr(encoder, "feature_dim"):
        encoder.feature_dim = z_dim  # (what a guide family is told; the diagonal ignores it)


MODELS.register("two-layer")(build_two_layer_vae)
MODELS.register("joint")(build_joint_vae)
MODELS.register("m2")(build_semi_supervised_vae)
MODELS.register("invariant")(build_invariant_vae)


def build_model(data_shape: Sequence[int], model: str = "vae", **options: object) -> VAE:
    """The named model structure, given the options it and its parts take (see each
    builder); ``context_dim`` reaches the models that read a context, ``labelled_share``
    (training images per labelled one) the semi-supervised one."""
    offer = {k: options.pop(k) for k in ("context_dim", "labelled_share") if k in options}
    check_shape(data_shape)
    beta = options.get("beta")
    if "beta" in options and "beta" not in MODELS.options(model):  # a factory of the user's:
        del options["beta"]  # beta reaches its latent sites through the handler instead
    vae = MODELS.create(model, data_shape, offer={"context_dim": 0, **offer}, **options)
    if beta is not None:
        vae.beta = beta
    return vae


def takes_option(option: str, model: str = "vae", **chosen: str) -> bool:
    """Whether a ``model`` assembled from the ``chosen`` parts (``likelihood="gaussian"``, ...)
    takes ``option``: its builder does, or a part it is assembled from does. (A builder's
    parts are the registries it names among its options: ``network``, ``likelihood``, ...)"""
    own = MODELS.options(model)
    return option in own or any(
        option in PART_REGISTRIES[part].options(name)
        for part, name in chosen.items()
        if part in own
    )
