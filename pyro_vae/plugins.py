"""Plug-ins: the user's own parts, imported only by name, and what a run records of them.

A plug-in is a Python module that registers parts the way ours are registered
(``@LIKELIHOODS.register("student-t")``). It enters by one of three doors:

- a file, ``--plugin my_parts.py`` (a spec ending in ``.py`` or holding a path separator),
  imported on its own as the module ``my_parts``, put in ``sys.modules`` before it runs so that
  dataclasses and pickle inside it work. A stem that is another module's name is refused;
- a module, ``--plugin my_pkg.parts``, imported with the current directory at the front of
  ``sys.path`` for that import only (a console script does not have it there);
- an entry point of the group ``pyro_vae.plugins`` declared by an installed distribution:
  :func:`load_entry_points` loads each once. One naming a function (``my_pkg.parts:register``)
  has it called with no arguments.

A plug-in runs once per process: naming it again (same spec, file or module) returns what the
first load found. One that fails to import is taken back, its modules out of ``sys.modules`` and
its entries out of the registries, so that fixing it and loading it again works. Every failure
is a :class:`PluginError` of one line.

A run records the plug-ins that made it (:meth:`Plugin.record`: spec, module, kind, file, sha256
of the source, version). A command that reads a run imports a plug-in only because the user
names it again or it is installed, never because the run directory names it: a run directory is
data, and one edited to name another module must make no command import it.
:func:`require_recorded` compares the record with what is loaded and imports nothing; it says
what to name when a plug-in is missing, and warns of one changed since.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import shlex
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from pyro_vae.registry import Registry

ENTRY_POINT_GROUP = "pyro_vae.plugins"
KINDS = ("file", "module", "entry-point")


class PluginError(ValueError):
    """A plug-in that does not load, or a run's plug-in not named: one line (exit status 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).splitlines()))


@dataclass(frozen=True)
class Plugin:
    """A loaded plug-in, as a run records it."""

    spec: str  # as the user named it: "my_parts.py", "my_pkg.parts", or the entry point's name
    module: str  # its name in sys.modules
    kind: str  # "file" | "module" | "entry-point"
    path: str | None  # the module's file, resolved (None for a namespace or built-in module)
    sha256: str | None  # of the module's source file (file and module kinds)
    version: str | None  # of the installed distribution that declares it (entry points)
    distribution: str | None = None  # that distribution's name

    def record(self) -> dict[str, Any]:
        """What a run directory keeps of this plug-in (JSON-able)."""
        return asdict(self)

    def matches(self, spec: str) -> bool:
        """Whether ``spec`` names this plug-in: the same spec, the same file once resolved, or
        the same module name. Nothing is imported."""
        if spec == self.spec:
            return True
        if _is_file(spec):
            return self.path is not None and _resolve(spec) == self.path
        return spec == self.module


_LOCK = threading.RLock()  # re-entrant: a plug-in may load another while it runs
_LOADED: list[Plugin] = []
_ENTRY_POINTS: list[Plugin] | None = None  # None until load_entry_points has run through


def _is_file(spec: str) -> bool:
    return spec.endswith(".py") or any(s and s in spec for s in ("/", os.sep, os.altsep))


def _dotted(name: str) -> bool:
    return bool(name) and all(part.isidentifier() for part in name.split("."))


def _resolve(path: str | os.PathLike) -> str:
    return str(Path(path).expanduser().resolve())


def _sha256(path: str | None) -> str | None:
    ok = path is not None and os.path.isfile(path)
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if ok else None


def _file_of(module: ModuleType) -> str | None:
    file = getattr(module, "__file__", None)
    return _resolve(file) if file else None


def _remember(plugin: Plugin) -> Plugin:
    _LOADED.append(plugin)
    return plugin


def load_plugin(spec: str) -> Plugin:
    """Import the plug-in ``spec`` names, a file or a module, once per process."""
    if not isinstance(spec, str) or not spec.strip() or "\0" in spec:
        raise PluginError(f"plug-in {spec!r}: name a file (my_parts.py) or a module (my_pkg.parts)")
    with _LOCK:
        return _load_file(spec) if _is_file(spec) else _load_module(spec)


def load_plugins(specs: Iterable[str]) -> list[Plugin]:
    """:func:`load_plugin` of each spec in turn; each plug-in once, in the order named."""
    return list(dict.fromkeys(load_plugin(spec) for spec in specs))


def _load_file(spec: str) -> Plugin:
    path = _resolve(spec)
    if not os.path.isfile(path):
        what = "a folder, not a .py file" if os.path.isdir(path) else "no such file"
        raise PluginError(f"plug-in {spec!r}: {what}")
    name = Path(path).stem
    if not name.replace("-", "_").isidentifier():  # "v1.2.py" would import a package "v1"
        raise PluginError(f"plug-in {spec!r}: {name!r} cannot name a module; rename the file")
    if known := next((p for p in _LOADED if p.path == path and p.module == name), None):
        return known
    if taken := _elsewhere(name, path):
        raise PluginError(f"plug-in {spec!r}: its name {name!r} is taken by {taken}; rename it")
    plugin = Plugin(spec, name, "file", path, _sha256(path), None)
    if name in sys.modules:  # the user's own code imported this very file
        return _remember(plugin)
    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)

    def run() -> None:
        sys.modules[name] = module  # before it runs: dataclasses and pickle look it up there
        module_spec.loader.exec_module(module)

    try:
        _taking_back(name, run)
    except Exception as e:
        raise PluginError(f"plug-in {spec!r} failed to import: {_describe(e)}") from e
    return _remember(plugin)


def _elsewhere(name: str, path: str) -> str | None:
    """What else goes by the module name ``name``, if anything but the file ``path`` does."""
    if name in sys.modules:
        file = _file_of(sys.modules[name])
        return None if file == path else f"the module {name!r} ({file or 'built-in'})"
    try:
        found = importlib.util.find_spec(name)  # a top-level name: finds, imports nothing
    except (ImportError, ValueError):
        return None
    if found is None or (found.has_location and _resolve(found.origin) == path):
        return None
    return f"the module {name!r} ({found.origin or 'a namespace package'})"


def _load_module(spec: str) -> Plugin:
    if not _dotted(spec):
        raise PluginError(f"plug-in {spec!r}: neither a module (my_pkg.parts) nor a file (x.py)")
    if known := next((p for p in _LOADED if p.module == spec), None):
        return known
    if spec not in sys.modules:
        _import_from_cwd(spec)
    return _remember(describe(spec))


def describe(module: str) -> Plugin:
    """What a run records of the module ``module`` as imported now, whether a plug-in loaded it
    or the user's own code did (a part defined in a script); nothing is imported."""
    path = _file_of(sys.modules[module]) if module in sys.modules else None
    return Plugin(module, module, "module", path, _sha256(path), None)


def _import_from_cwd(spec: str) -> None:
    cwd = os.getcwd()
    sys.path.insert(0, cwd)
    importlib.invalidate_caches()  # a file written a moment ago is seen
    try:
        _taking_back(spec, lambda: importlib.import_module(spec))
    except Exception as e:
        name = getattr(e, "name", None) if isinstance(e, ModuleNotFoundError) else None
        if name and (spec == name or spec.startswith(name + ".")):  # not found, not its import
            where = "looked in the current directory and sys.path"
            raise PluginError(f"plug-in {spec!r}: no module named {name!r} ({where})") from None
        raise PluginError(f"plug-in {spec!r} failed to import: {_describe(e)}") from e
    finally:
        if cwd in sys.path:
            sys.path.remove(cwd)  # the first occurrence: the one put there above


def load_entry_points() -> list[Plugin]:
    """Load every plug-in that installed distributions declare under ``pyro_vae.plugins``:
    each once per process (later calls return the first call's list)."""
    global _ENTRY_POINTS
    with _LOCK:
        if _ENTRY_POINTS is None:
            # those loaded by a call that a later entry point's failure cut short stay loaded
            done = {p.spec: p for p in _LOADED if p.kind == "entry-point"}
            group = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
            _ENTRY_POINTS = [done.get(ep.name) or _load_entry_point(ep) for ep in group]
        return list(_ENTRY_POINTS)


def _load_entry_point(ep: importlib.metadata.EntryPoint) -> Plugin:
    dist = getattr(ep, "dist", None)
    dist_name, version = (dist.name, dist.version) if dist is not None else (None, None)
    source = " ".join(filter(None, (dist_name, version))) or "an unknown distribution"

    def run() -> None:
        target = ep.load()
        if ep.attr:  # "pkg.mod:register": a registration function
            target()

    try:
        _taking_back(ep.module, run)
    except Exception as e:
        where = f"entry point {ep.value!r} of {source}"
        raise PluginError(f"plug-in {ep.name!r} ({where}) failed to import: {_describe(e)}") from e
    path = _file_of(sys.modules[ep.module]) if ep.module in sys.modules else None
    return _remember(Plugin(ep.name, ep.module, "entry-point", path, None, version, dist_name))


def loaded() -> list[Plugin]:
    """Every plug-in loaded so far in this process, in load order."""
    return list(_LOADED)


def find(spec: str) -> Plugin | None:
    """The loaded plug-in that ``spec`` names (:meth:`Plugin.matches`), if any."""
    return next((p for p in _LOADED if p.matches(spec)), None)


def _registries() -> list[Registry]:
    """The registries of the package's imported modules."""
    found: dict[int, Registry] = {}
    for name, module in list(sys.modules.items()):
        if (name == "pyro_vae" or name.startswith("pyro_vae.")) and isinstance(module, ModuleType):
            found.update((id(v), v) for v in list(vars(module).values()) if isinstance(v, Registry))
    return list(found.values())


def _taking_back(name: str, action: Callable[[], Any]) -> Any:
    """``action()``; should it raise, what it imported under ``name``'s package leaves
    ``sys.modules``, and what that registered leaves the registries, before the error goes on."""
    modules_before = set(sys.modules)
    entries_before = {id(r): dict(r._entries) for r in _registries()}
    try:
        return action()
    except BaseException:
        root = name.split(".")[0]
        new = {m for m in sys.modules if m not in modules_before}
        owners = {m for m in new if m == root or m.startswith(root + ".")} | {name}
        for registry in _registries():
            before = entries_before.get(id(registry), {})
            for key, factory in list(registry._entries.items()):
                if getattr(factory, "__module__", None) not in owners:
                    continue
                if key in before:
                    registry._entries[key] = before[key]  # a replaced entry comes back
                else:
                    del registry._entries[key]
        for module in owners & new:
            sys.modules.pop(module, None)
        raise


def _describe(error: BaseException) -> str:
    """An exception in one line: its type, its message's first line, and where in the user's
    code it was raised."""
    if isinstance(error, SyntaxError):
        return f"SyntaxError: {error.msg} ({error.filename}, line {error.lineno})"
    first = next(iter(str(error).splitlines()), "")
    text = f"{type(error).__name__}: {first}" if first else type(error).__name__
    prefixes = {
        os.path.dirname(os.path.abspath(__file__)),
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
    }
    outside = tuple(os.path.join(p, "") for p in prefixes)  # ours and Python's
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename[:1] != "<"]
    frames = [f for f in frames if not f.filename.startswith(outside)]
    return f"{text} ({frames[-1].filename}, line {frames[-1].lineno})" if frames else text


def _checked(recorded: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The run's plug-in records, each checked for the shape :meth:`Plugin.record` gives."""
    optional = ("path", "sha256", "version", "distribution")
    for i, entry in enumerate(recorded):
        ok = isinstance(entry, Mapping) and entry.get("kind") in KINDS
        ok = ok and all(isinstance(entry.get(k), str) and entry[k] for k in ("spec", "module"))
        ok = ok and not any("\0" in v for v in entry.values() if isinstance(v, str))
        if not (ok and all(isinstance(entry.get(k), str | None) for k in optional)):
            raise PluginError(f"the run's record of plug-ins is malformed (entry {i}: {entry!r})")
    return [dict(entry) for entry in recorded]


def _same(plugin: Plugin, record: Mapping[str, Any]) -> bool:
    """Whether the loaded ``plugin`` is the one ``record`` speaks of."""
    if plugin.module == record["module"]:
        return True
    if record["kind"] == "entry-point":
        return plugin.kind == "entry-point" and plugin.spec == record["spec"]
    return plugin.kind != "entry-point" and plugin.matches(record["spec"])


def _change(plugin: Plugin, record: Mapping[str, Any]) -> str | None:
    for key, cut in (("sha256", 8), ("version", None)):
        then, now = record.get(key), getattr(plugin, key)
        if then and now and then != now:
            since = f"{key} {then[:cut]} then, {now[:cut]} now"
            return f"plug-in {record['spec']!r} changed since the run was made ({since})"
    return None


def require_recorded(recorded: Sequence[Mapping[str, Any]], *, how: str) -> list[str]:
    """Check that the plug-ins a run was made with (its list of :meth:`Plugin.record`) are
    loaded, after loading the installed entry points; return a warning for each one changed
    since. One neither loaded nor installed is a :class:`PluginError` saying what to name,
    spelled with ``how``: ``"--plugin"`` gives ``--plugin my_parts.py``, and ``"plugins=[...]"``
    gives ``plugins=['my_parts.py']``. Nothing the record names is imported."""
    records = _checked(recorded)
    if records:
        load_entry_points()
    warnings, missing = [], []
    for record in records:
        plugin = next((p for p in loaded() if _same(p, record)), None)
        if plugin is None:
            missing.append(record)
        elif change := _change(plugin, record):
            warnings.append(change)
    if missing:
        raise PluginError(_missing(missing, how))
    return warnings


def _missing(records: list[dict[str, Any]], how: str) -> str:
    """The message for plug-ins a run was made with that are not loaded."""
    described, to_name, to_install = [], [], []
    for r in records:
        facts = [f"{r['kind']} {r.get('path') or r['module']}"]
        if r.get("sha256"):
            facts.append(f"sha256 {r['sha256'][:8]}")
        if r.get("version"):
            facts.append(f"{r.get('distribution') or 'version'} {r['version']}")
        described.append(f"{r['spec']!r} ({', '.join(facts)})")
        if r["kind"] == "entry-point":
            to_install.append(r.get("distribution") or f"what declares {r['spec']!r}")
        elif r["kind"] == "file" and r.get("path") and _resolve(r["spec"]) != r["path"]:
            to_name.append(r["path"])  # the run was made in another folder: name its file
        else:
            to_name.append(r["spec"])
    them = "it" if len(records) == 1 else "them"
    actions = [f"name {them} again to read the run ({_spell(how, to_name)})"] if to_name else []
    actions += [f"install {', '.join(to_install)} to read the run"] if to_install else []
    head = "the plug-in" if len(records) == 1 else "the plug-ins"
    return f"this run was made with {head} {' and '.join(described)}: {'; '.join(actions)}"


def _spell(how: str, specs: list[str]) -> str:
    """How the user names ``specs``: ``--plugin a.py --plugin b``, or ``plugins=['a.py', 'b']``."""
    if "..." in how:
        return how.replace("...", ", ".join(map(repr, specs)))
    return " ".join(f"{how} {shlex.quote(s)}" for s in specs)


def module_of_reference(ref: str) -> tuple[str, str]:
    """Split ``MODULE:NAME`` or ``FILE.py:NAME`` (``--model my_parts.py:make``) into the plug-in
    to load and the dotted name of the object in it."""
    spec, sep, name = ref.rpartition(":") if isinstance(ref, str) else ("", "", "")
    if not (sep and _dotted(name) and spec and (_is_file(spec) or _dotted(spec))):
        raise PluginError(
            f"{ref!r} is not a reference: write MODULE:NAME or FILE.py:NAME (my_pkg.parts:make, "
            "my_parts.py:make)"
        )
    return spec, name


def _reset_for_tests() -> None:
    """Forget every plug-in loaded and the entry points' cache (the modules stay imported)."""
    global _ENTRY_POINTS
    with _LOCK:
        _LOADED.clear()
        _ENTRY_POINTS = None
