"""The user's own code in a run: plug-ins and model factories imported when named, recorded in
the run, and required again (never imported) when the run is read.

A run is trained from parts chosen by name. Where a part is the user's (a likelihood a
plug-in registered, a model built by ``--model MODULE:FACTORY``), config.json records the
module that defines it (:attr:`TrainConfig.plugins <pyro_vae.training.options.TrainConfig>`:
its name, its file's SHA-256 or its distribution's version). A command that reads the run
(``evaluate``, ``report``, ``sample``, ``--resume``, ``load_run``) checks that record against
the plug-ins the user named this time and the installed entry points, and refuses in one line
that says what to name otherwise: a run directory is data, and data never chooses what code
runs (:mod:`pyro_vae.plugins`).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .. import plugins
from ..data import DATASETS
from ..inference import ESTIMATORS
from ..model import MODELS, VAE
from ..model.option_routing import PART_REGISTRIES
from ..registry import Registry
from .option_checks import GIVEN_MODEL, is_factory
from .options import TrainConfig


def prepare_training(named: Sequence[str], model: str | None) -> list[plugins.Plugin]:
    """Import what the user named for a run: the installed entry points, the ``named``
    plug-ins, and the module of a ``MODULE:FACTORY`` model (whose factory is then a model
    name, as ours are)."""
    loaded = [*plugins.load_entry_points(), *plugins.load_plugins(named)]
    if is_factory(model):
        register_factory(model, may_import=True)
    return loaded


def prepare_reading(named: Sequence[str]) -> list[plugins.Plugin]:
    """Import what the user named for reading a run (and the installed entry points)."""
    return [*plugins.load_entry_points(), *plugins.load_plugins(named)]


def register_factory(reference: str, *, may_import: bool) -> None:
    """Make ``MODULE:FACTORY`` a model name: the factory, wrapped to check that it returns a
    VAE, in ``MODELS``. ``may_import``: import the module if it is not loaded (the user named
    it); otherwise it must have been named as a plug-in (:class:`~pyro_vae.plugins.PluginError`
    says so)."""
    if reference in MODELS:
        return
    module_spec, name = plugins.module_of_reference(reference)
    plugin = plugins.find(module_spec)
    if plugin is None:
        if not may_import:
            raise plugins.PluginError(
                f"this run's model is built by {reference!r}: name its module again to read "
                f"the run (--plugin {module_spec})"
            )
        plugin = plugins.load_plugin(module_spec)
    factory = getattr(sys.modules[plugin.module], name, None)
    if not callable(factory):
        raise plugins.PluginError(
            f"--model {reference}: the module {plugin.module!r} has no function {name!r}"
        )
    MODELS.register(reference)(_checked_factory(reference, factory))


def _checked_factory(reference: str, factory: Callable[..., Any]) -> Callable[..., VAE]:
    @functools.wraps(factory)  # (its signature, through __wrapped__: its options are ours)
    def build(*args: Any, **kwargs: Any) -> VAE:
        vae = factory(*args, **kwargs)
        if not isinstance(vae, VAE):
            raise ValueError(
                f"--model {reference} returned a {type(vae).__name__}, not a pyro_vae.VAE "
                "(build one with pyro_vae.build_vae or a subclass of pyro_vae.VAE)"
            )
        return vae

    return build


def given_model_options(vae: VAE, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options of a run whose VAE is given from Python: ``model="given"``, and data
    binarized where the VAE's likelihood is one of binary data (unless told otherwise)."""
    if "model" in options:
        raise TypeError("give vae= or model=, not both")
    out = {**options, "model": GIVEN_MODEL}
    if out.get("binarize", "auto") == "auto":
        kind = getattr(getattr(vae, "likelihood", None), "data_kind", None)
        out["binarize"] = "dynamic" if kind == "binary" else "none"
    return out


def _chosen(config: TrainConfig) -> list[tuple[Registry, str]]:
    """Every registry entry the config chose by name."""
    chosen = [(registry, getattr(config, part)) for part, registry in PART_REGISTRIES.items()]
    chosen += [(MODELS, config.model), (ESTIMATORS, config.estimator), (DATASETS, config.dataset)]
    return [(r, name) for r, name in chosen if name is not None and name in r]


def _users_module(factory: Callable[..., Any]) -> str | None:
    """The module that defines ``factory`` when it is the user's (outside the package), else
    None. (A factory wrapped by :func:`_checked_factory` carries its module by ``wraps``.)"""
    module = factory.__module__
    return None if module.split(".")[0] == "pyro_vae" else module


def code_record(config: TrainConfig) -> list[dict[str, Any]]:
    """The modules outside the package that define the parts ``config`` chose, as
    :meth:`pyro_vae.plugins.Plugin.record` dicts (the plug-in as it was named, where it was)."""
    records: dict[str, dict[str, Any]] = {}
    for registry, name in _chosen(config):
        module = _users_module(registry.get(name))
        if module is None or module in records:
            continue
        plugin = plugins.find(module) or plugins.describe(module)
        records[module] = plugin.record()
    return list(records.values())


def with_code_record(config: TrainConfig) -> TrainConfig:
    """``config`` with the record of the user's modules it uses."""
    return dataclasses.replace(config, plugins=code_record(config))


def check_recorded(saved: Mapping[str, Any], how: str = "--plugin") -> None:
    """Before a saved config is read: every module it records has been named again (or is an
    installed entry point), and a factory model is registered from its named module. Nothing
    is imported here; a module the user has not named is refused in one line."""
    recorded = saved.get("plugins") or []
    if not isinstance(recorded, list) or not all(isinstance(r, dict) for r in recorded):
        raise plugins.PluginError("the run's record of its plug-ins is not a list of objects")
    for warning in plugins.require_recorded(recorded, how=how):
        warnings.warn(warning, stacklevel=2)
    model = saved.get("model")
    if is_factory(model):
        register_factory(model, may_import=False)


def user_part_options() -> dict[str, tuple[Any, str]]:
    """The options of every part registered from outside the package (keyword-only parameters
    of a plug-in's family or a factory), each with its default and the parts that take it."""
    found: dict[str, tuple[Any, list[str]]] = {}
    registries = [*PART_REGISTRIES.values(), MODELS, ESTIMATORS, DATASETS]
    for registry in registries:
        for name in registry:
            if _users_module(registry.get(name)) is None:
                continue
            for option, default in registry.defaults(name).items():
                found.setdefault(option, (default, []))[1].append(f"{registry.kind} {name}")
    return {k: (default, ", ".join(owners)) for k, (default, owners) in found.items()}
