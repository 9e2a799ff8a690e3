"""User code enters by name, never by a run directory: plug-ins named as files or modules, or
installed as entry points, register parts the way ours are registered; each runs once; one that
fails is one line and leaves nothing half-registered; a run's record of its plug-ins is checked
against what is loaded, and nothing it names is ever imported because it names it."""

from __future__ import annotations

import hashlib
import json
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from pyro_vae import plugins
from pyro_vae.model import LIKELIHOODS
from pyro_vae.plugins import Plugin, PluginError
from pyro_vae.registry import Registry

PARTS = """
from pyro_vae.model import LIKELIHOODS, Likelihood

with open("runs.txt", "a") as f:
    f.write("ran\\n")


@LIKELIHOODS.register({name!r}{override})
class Mine(Likelihood):
    pass
{tail}
"""


class Place:
    """A working directory to write plug-ins in, and names no other test uses."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tag = uuid.uuid4().hex[:10]

    def name(self, stem: str) -> str:
        return f"{stem}_{self.tag}"

    def write(self, relative: str, source: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        return path

    def parts(self, relative: str, name: str, *, override: bool = False, tail: str = "") -> Path:
        """A plug-in registering the likelihood ``name`` that notes each run in runs.txt."""
        flag = ", override=True" if override else ""
        return self.write(relative, PARTS.format(name=name, override=flag, tail=tail))

    def runs(self) -> int:
        runs = self.root / "runs.txt"
        return len(runs.read_text().splitlines()) if runs.exists() else 0


@pytest.fixture
def place(tmp_path, monkeypatch):
    """A fresh working directory; afterwards the likelihoods, modules and plug-ins the test
    loaded are forgotten."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(LIKELIHOODS, "_entries", dict(LIKELIHOODS._entries))
    plugins._reset_for_tests()
    here = Place(tmp_path)
    yield here
    plugins._reset_for_tests()
    for module in [m for m in sys.modules if here.tag in m]:
        del sys.modules[module]


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# --- loading -------------------------------------------------------------------------------


def test_a_file_registers_its_parts_and_is_recorded(place):
    lik = place.name("lik")
    path = place.parts(f"{place.name('parts')}.py", lik)
    plugin = plugins.load_plugin(path.name)
    assert lik in LIKELIHOODS
    assert LIKELIHOODS.get(lik).__module__ == place.name("parts")
    assert plugin == Plugin(
        spec=path.name,
        module=place.name("parts"),
        kind="file",
        path=str(path.resolve()),
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        version=None,
    )
    assert json.loads(json.dumps(plugin.record())) == plugin.record()
    assert plugins.loaded() == [plugin]
    for spec in (path.name, f"./{path.name}", str(path), place.name("parts")):
        assert plugins.find(spec) is plugin, spec
    assert plugins.find("other.py") is None


def test_a_module_is_found_in_the_working_directory_only_for_its_import(place):
    lik = place.name("lik")
    package = place.name("pkg")
    place.write(f"{package}/__init__.py", "")
    path = place.parts(f"{package}/parts.py", lik)
    path_before = list(sys.path)
    plugin = plugins.load_plugin(f"{package}.parts")
    assert sys.path == path_before
    assert lik in LIKELIHOODS
    assert (plugin.kind, plugin.module, plugin.path) == ("module", plugin.spec, str(path))
    assert plugin.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_plugin_runs_once_however_it_is_named_again(place):
    stem = place.name("parts")
    path = place.parts(f"{stem}.py", place.name("lik"))
    first = plugins.load_plugin(f"{stem}.py")
    for spec in (f"{stem}.py", f"./{stem}.py", str(path), stem):
        assert plugins.load_plugin(spec) is first, spec
    assert plugins.load_plugins([f"{stem}.py", stem]) == [first]
    assert place.runs() == 1
    assert plugins.loaded() == [first]


def test_a_file_is_in_sys_modules_while_it_runs(place):
    """Pickle (and dataclasses) look a class's module up by name as the module runs."""
    stem = place.name("parts")
    tail = """
    import dataclasses, pickle

    @dataclasses.dataclass
    class Options:
        width: int = 3

    assert pickle.loads(pickle.dumps(Options())) == Options()
    """
    place.parts(f"{stem}.py", place.name("lik"), tail=textwrap.dedent(tail))
    plugin = plugins.load_plugin(f"{stem}.py")
    assert sys.modules[plugin.module].Options().width == 3


def test_a_module_the_users_code_imported_is_described_and_not_run_again(place, monkeypatch):
    stem = place.name("parts")
    path = place.parts(f"{stem}.py", place.name("lik"))
    monkeypatch.syspath_prepend(str(place.root))
    __import__(stem)
    described = plugins.describe(stem)
    assert (described.path, described.kind) == (str(path), "module")
    assert described.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert plugins.loaded() == []  # described, not loaded
    assert plugins.load_plugin(f"{stem}.py").sha256 == described.sha256
    assert plugins.load_plugin(stem).path == str(path)
    assert place.runs() == 1
    absent = place.name("absent")
    place.write(f"{absent}.py", "open('IMPORTED', 'w').close()\n")
    assert plugins.describe(absent).path is None
    assert not (place.root / "IMPORTED").exists()


def test_a_plugin_that_fails_is_taken_back_and_can_be_loaded_once_fixed(place):
    stem, lik = place.name("parts"), place.name("lik")
    place.parts(f"{stem}.py", lik, tail="\nratio = 1 / 0\n")
    with pytest.raises(PluginError) as error:
        plugins.load_plugin(f"{stem}.py")
    message = _one_line(error)
    assert message.startswith(
        f"plug-in '{stem}.py' failed to import: ZeroDivisionError: division by zero ("
    )
    assert f"{stem}.py, line " in message  # where in the user's file
    assert stem not in sys.modules
    assert lik not in LIKELIHOODS
    assert plugins.loaded() == []
    place.parts(f"{stem}.py", lik)
    plugins.load_plugin(f"{stem}.py")
    assert lik in LIKELIHOODS


def test_a_plugin_that_fails_after_replacing_a_builtin_gives_it_back(place):
    builtin = LIKELIHOODS.get("bernoulli")
    stem = place.name("parts")
    place.parts(f"{stem}.py", "bernoulli", override=True, tail="\nraise RuntimeError('no')\n")
    with pytest.raises(PluginError, match="RuntimeError: no"):
        plugins.load_plugin(f"{stem}.py")
    assert LIKELIHOODS.get("bernoulli") is builtin
    assert LIKELIHOODS.names()[0] == "bernoulli"


def test_a_package_that_fails_takes_back_the_modules_it_imported(place):
    package, lik = place.name("pkg"), place.name("lik")
    place.write(f"{package}/__init__.py", "")
    place.parts(f"{package}/helper.py", lik)
    place.write(f"{package}/parts.py", "from . import helper\nraise ValueError('bad\\nworse')\n")
    with pytest.raises(PluginError) as error:
        plugins.load_plugin(f"{package}.parts")
    assert "failed to import: ValueError: bad (" in _one_line(error)
    assert not [m for m in sys.modules if m.startswith(package)]
    assert lik not in LIKELIHOODS


def test_a_syntax_error_names_the_file_and_line(place):
    stem = place.name("parts")
    path = place.write(f"{stem}.py", "x = 1\ndef broken(:\n")
    with pytest.raises(PluginError) as error:
        plugins.load_plugin(f"{stem}.py")
    message = _one_line(error)
    assert message.startswith(f"plug-in '{stem}.py' failed to import: SyntaxError: ")
    assert message.endswith(f"({path.resolve()}, line 2)")
    assert stem not in sys.modules


def test_a_missing_file_or_module(place):
    with pytest.raises(PluginError) as error:
        plugins.load_plugin("nowhere.py")
    assert _one_line(error) == "plug-in 'nowhere.py': no such file"
    name = place.name("nowhere")
    with pytest.raises(PluginError) as error:
        plugins.load_plugin(name)
    assert _one_line(error) == (
        f"plug-in {name!r}: no module named {name!r} (looked in the current directory and sys.path)"
    )


def test_a_module_missing_inside_the_plugin_is_an_import_failure(place):
    stem, dependency = place.name("parts"), place.name("dependency")
    place.write(f"{stem}.py", f"import {dependency}\n")
    with pytest.raises(PluginError) as error:
        plugins.load_plugin(stem)
    assert _one_line(error).startswith(
        f"plug-in {stem!r} failed to import: ModuleNotFoundError: No module named {dependency!r}"
    )


def test_a_file_may_not_take_another_modules_name(place):
    json_module = sys.modules["json"]
    place.write("json.py", "raise SystemExit('must not run')\n")
    with pytest.raises(PluginError, match="its name 'json' is taken by the module 'json'"):
        plugins.load_plugin("json.py")
    assert sys.modules["json"] is json_module
    assert "tabnanny" not in sys.modules  # importable, not imported: refused all the same
    place.write("tabnanny.py", "")
    with pytest.raises(PluginError, match="its name 'tabnanny' is taken by the module"):
        plugins.load_plugin("tabnanny.py")
    assert "tabnanny" not in sys.modules
    place.write("v1.2.py", "")
    with pytest.raises(PluginError, match="'v1.2' cannot name a module"):
        plugins.load_plugin("v1.2.py")


def test_a_name_a_builtin_holds_is_refused_unless_replaced_on_purpose(place):
    builtin = LIKELIHOODS.get("bernoulli")
    stem = place.name("parts")
    place.parts(f"{stem}.py", "bernoulli")
    with pytest.raises(PluginError) as error:
        plugins.load_plugin(f"{stem}.py")
    message = _one_line(error)
    assert "likelihood 'bernoulli' is registered already" in message
    assert "register(..., override=True)" in message
    assert LIKELIHOODS.get("bernoulli") is builtin
    place.parts(f"{stem}.py", "bernoulli", override=True)
    plugins.load_plugin(f"{stem}.py")
    assert LIKELIHOODS.get("bernoulli").__module__ == stem


def test_a_registry_refuses_a_name_twice_and_replaces_it_when_told():
    registry: Registry[object] = Registry("widget")
    first = registry.register("a")(type("First", (), {}))
    registry.register("b")(type("Other", (), {}))
    with pytest.raises(ValueError, match=r"widget 'a' is registered already .*override=True"):
        registry.register("a")(type("Second", (), {}))
    assert registry.get("a") is first
    second = registry.register("a", override=True)(type("Second", (), {}))
    assert registry.get("a") is second and second.registry_name == "a"
    assert registry.names() == ["a", "b"]


# --- entry points --------------------------------------------------------------------------


def _install(place, monkeypatch, entry_points: str, files: dict[str, str]) -> Path:
    """A distribution demo-plugin 1.0 installed in ``site``: its metadata and ``files``."""
    site = place.root / "site"
    info = site / "demo_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[pyro_vae.plugins]\n{entry_points}\n")
    for relative, source in files.items():
        place.write(f"site/{relative}", source)
    monkeypatch.syspath_prepend(str(site))
    return site


def test_entry_points_are_loaded_once_with_their_version(place, monkeypatch):
    package, lik, lik_fn = place.name("demo_plugin"), place.name("lik"), place.name("fn")
    register = f"""
    from pyro_vae.model import LIKELIHOODS, Likelihood

    def register():
        LIKELIHOODS.register({lik_fn!r})(type("Fn", (Likelihood,), {{}}))
    """
    _install(
        place,
        monkeypatch,
        f"demo = {package}.parts\ndemo-fn = {package}.fn:register",
        {
            f"{package}/__init__.py": "",
            f"{package}/parts.py": PARTS.format(name=lik, override="", tail=""),
            f"{package}/fn.py": register,
        },
    )
    found = {p.spec: p for p in plugins.load_entry_points()}
    assert found["demo"] == Plugin(
        "demo", f"{package}.parts", "entry-point", found["demo"].path, None, "1.0", "demo-plugin"
    )
    assert found["demo"].path.endswith("parts.py")
    assert found["demo-fn"].module == f"{package}.fn"
    assert lik in LIKELIHOODS and lik_fn in LIKELIHOODS
    scans = []
    monkeypatch.setattr(plugins.importlib.metadata, "entry_points", lambda **k: scans.append(k))
    assert plugins.load_entry_points() == list(found.values())
    assert scans == [] and place.runs() == 1  # the first call's list: nothing looked up again
    assert plugins.find("demo") is found["demo"]


def test_an_entry_point_that_fails_names_itself_and_its_distribution(place, monkeypatch):
    package = place.name("demo_plugin")
    _install(
        place,
        monkeypatch,
        f"demo = {package}.parts",
        {f"{package}/__init__.py": "", f"{package}/parts.py": "import no_such_dependency_x\n"},
    )
    with pytest.raises(PluginError) as error:
        plugins.load_entry_points()
    assert _one_line(error).startswith(
        f"plug-in 'demo' (entry point '{package}.parts' of demo-plugin 1.0) failed to import: "
        "ModuleNotFoundError: No module named 'no_such_dependency_x'"
    )


# --- what a run recorded -------------------------------------------------------------------


def _record(place, stem: str, **change) -> dict:
    """The record of a file plug-in as a run made elsewhere would hold it, nothing loaded."""
    path = place.root / f"{stem}.py"
    record = dict(spec=f"{stem}.py", module=stem, kind="file", path=str(path.resolve()))
    record.update(sha256=hashlib.sha256(path.read_bytes()).hexdigest(), version=None)
    return {**record, **change}


def test_a_run_read_without_its_plugin_says_what_to_name(place):
    stem = place.name("parts")
    place.parts(f"{stem}.py", place.name("lik"))
    record = _record(place, stem)
    with pytest.raises(PluginError) as error:
        plugins.require_recorded([record], how="--plugin")
    assert _one_line(error) == (
        f"this run was made with the plug-in '{stem}.py' (file {record['path']}, sha256 "
        f"{record['sha256'][:8]}): name it again to read the run (--plugin {stem}.py)"
    )
    with pytest.raises(PluginError, match=rf"\(plugins=\['{stem}.py'\]\)$"):
        plugins.require_recorded([record], how="plugins=[...]")
    assert place.runs() == 0 and stem not in sys.modules
    plugins.load_plugin(f"{stem}.py")
    assert plugins.require_recorded([record], how="--plugin") == []


def test_a_run_made_in_another_folder_names_its_file(place, monkeypatch):
    stem = place.name("parts")
    place.parts(f"{stem}.py", place.name("lik"))
    record = _record(place, stem)
    (place.root / "elsewhere").mkdir()
    monkeypatch.chdir(place.root / "elsewhere")
    with pytest.raises(PluginError, match=rf"\(--plugin {record['path']}\)$"):
        plugins.require_recorded([record], how="--plugin")
    plugins.load_plugin(f"../{stem}.py")
    assert plugins.require_recorded([record], how="--plugin") == []


def test_a_plugin_changed_since_the_run_is_a_warning(place):
    stem = place.name("parts")
    place.parts(f"{stem}.py", place.name("lik"))
    now = plugins.load_plugin(f"{stem}.py").sha256
    record = _record(place, stem, sha256="ab12cd34" * 8)
    assert plugins.require_recorded([record], how="--plugin") == [
        f"plug-in '{stem}.py' changed since the run was made (sha256 ab12cd34 then, {now[:8]} now)"
    ]


def test_a_run_directory_never_makes_a_command_import_what_it_names(place, monkeypatch):
    """The record is data: one edited to name a module that sits importable in the working
    directory and on sys.path is refused, and the module never runs."""
    evil = place.name("evil")
    place.write(f"{evil}.py", "open('IMPORTED', 'w').close()\n")
    monkeypatch.syspath_prepend(str(place.root))
    path = str(place.root / f"{evil}.py")
    records = [
        dict(spec=evil, module=evil, kind="module", path=path, sha256=None, version=None),
        dict(spec=f"{evil}.py", module=evil, kind="file", path=path, sha256=None, version=None),
        dict(spec=evil, module=evil, kind="entry-point", path=path, sha256=None, version="1"),
    ]
    for record in records:
        with pytest.raises(PluginError, match="this run was made with the plug-in"):
            plugins.require_recorded([record], how="--plugin")
    assert not (place.root / "IMPORTED").exists()
    assert evil not in sys.modules
    plugins.load_plugin(evil)  # named by the user: imported, as the check above would see
    assert (place.root / "IMPORTED").exists()


def test_an_installed_entry_point_satisfies_a_run_and_a_new_version_warns(place, monkeypatch):
    package, lik = place.name("demo_plugin"), place.name("lik")
    files = {
        f"{package}/__init__.py": "",
        f"{package}/parts.py": PARTS.format(name=lik, override="", tail=""),
    }
    _install(place, monkeypatch, f"demo = {package}.parts", files)
    record = dict(spec="demo", module=f"{package}.parts", kind="entry-point", path=None)
    record.update(sha256=None, version="0.9", distribution="demo-plugin")
    assert plugins.require_recorded([record], how="--plugin") == [
        "plug-in 'demo' changed since the run was made (version 0.9 then, 1.0 now)"
    ]
    assert lik in LIKELIHOODS


def test_a_missing_entry_point_asks_for_its_distribution(place):
    record = dict(spec="gone", module="gone_pkg.parts", kind="entry-point", path=None)
    record.update(sha256=None, version="2.0", distribution="gone-plugin")
    with pytest.raises(PluginError) as error:
        plugins.require_recorded([record], how="--plugin")
    assert _one_line(error) == (
        "this run was made with the plug-in 'gone' (entry-point gone_pkg.parts, gone-plugin "
        "2.0): install gone-plugin to read the run"
    )


@pytest.mark.parametrize(
    "record",
    [
        "my_parts.py",
        {"spec": "x.py", "module": "x", "kind": "script", "path": None, "sha256": None},
        {"spec": "x.py", "kind": "file"},
        {"spec": "x.py", "module": "x", "kind": "file", "path": 3},
        {"spec": "x\0.py", "module": "x", "kind": "file", "path": None},
    ],
)
def test_a_malformed_record_is_refused(place, record):
    with pytest.raises(PluginError, match="the run's record of plug-ins is malformed"):
        plugins.require_recorded([record], how="--plugin")


def test_a_record_cannot_break_the_message_over_lines(place):
    record = dict(spec="a\nb.py", module="a\nb", kind="file", path=None, sha256=None)
    with pytest.raises(PluginError) as error:
        plugins.require_recorded([record], how="--plugin")
    assert "'a\\nb.py'" in _one_line(error)


# --- references ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref,parts",
    [
        ("my_parts.py:make", ("my_parts.py", "make")),
        ("pkg.mod:make", ("pkg.mod", "make")),
        ("sub/dir/parts.py:Factory.build", ("sub/dir/parts.py", "Factory.build")),
        (r"C:\work\parts.py:make", (r"C:\work\parts.py", "make")),
    ],
)
def test_a_reference_names_a_plugin_and_an_object_in_it(ref, parts):
    assert plugins.module_of_reference(ref) == parts


@pytest.mark.parametrize(
    "ref", ["make", "my_parts.py", ":make", "pkg.mod:", "pkg.mod:1st", "my parts:make", "a..b:c"]
)
def test_a_reference_of_another_form_is_refused(ref):
    with pytest.raises(PluginError, match="is not a reference: write MODULE:NAME"):
        plugins.module_of_reference(ref)
