"""A user's project sees taskell as mypy --strict sees any typed package, installed or editable.

Each test builds a throwaway venv offline: `python -m venv`, then pip installs a copy of the
checkout (`pip install .` or `pip install -e .`) with no dependencies and no build isolation. The
dependencies come from this venv's site-packages through a folder of links ("farm") holding
exactly the distributions they need, reached by a .pth file: the runtime farm holds taskell's
runtime dependencies plus mypy and setuptools (which python 3.11 venvs have anyway), the gen farm
what the `gen` extra adds. The user's project lives in a temporary folder outside the checkout,
with no mypy configuration at all.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

SCHEMA = """\
taskell: 1
package: shop
types:
  Order:
    fields:
      sku: str
      quantity: int
      note: {type: str | None, default: null}
tasks:
  place:
    args:
      order: Order
    progress: int
    result: int
"""

GOOD = """\
import taskell
from shop import Client, Order, registry


def submit(conn: taskell.Connection) -> int:
    handle = Client(conn).place(order=Order(sku="a", quantity=2))
    done: int | None = handle.latest_progress
    return handle.result(timeout=5)


class Impl:
    def place(self, ctx: taskell.Context[int], order: Order) -> int:
        ctx.progress(100)
        return order.quantity


handlers: taskell.Registry = registry(Impl())
"""

# Each line marked `# E: <code>` must be rejected with that code, and no other line.
BAD = """\
import taskell
from shop import Client, Order, registry


def submit(conn: taskell.Connection) -> None:
    demo = Client(conn)
    demo.place(order=Order(sku="a", quantity="2"))  # E: arg-type
    demo.place(order=Order(sku="a"))  # E: call-arg
    demo.place(order=Order(sku="a", quantity=1, colour="red"))  # E: call-arg
    demo.place(order={"sku": "a", "quantity": 1})  # E: arg-type
    text: str = demo.place(order=Order(sku="a", quantity=1)).result()  # E: assignment


class Impl:
    def place(self, ctx: taskell.Context[int], order: Order) -> str:
        return order.sku


registry(Impl())  # E: arg-type
"""


def _distributions(requirements: Iterable[str]) -> set[str]:
    """Names of the installed distributions these requirements pull in, transitively."""

    def applicable(texts: Iterable[str], extra: str) -> list[Requirement]:
        found = map(Requirement, texts)
        return [r for r in found if not r.marker or r.marker.evaluate({"extra": extra})]

    seen: set[str] = set()
    todo = applicable(requirements, "")
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name not in seen:
            seen.add(name)
            for extra in ["", *requirement.extras]:
                todo += applicable(importlib.metadata.requires(name) or [], extra)
    return seen


def _farm(folder: Path, distributions: Iterable[str]) -> Path:
    """A folder of links to the top-level files of these distributions in this venv.

    Their scripts (ruff's binary) go to bin/ in it, where ruff looks for itself.
    """
    (folder / "bin").mkdir(parents=True)
    for name in distributions:
        dist = importlib.metadata.distribution(name)
        for file in dist.files or []:
            path = Path(str(dist.locate_file(file))).resolve()
            top = Path(str(file)).parts[0]
            if top == ".." and path.parent.name == "bin":
                (folder / "bin" / path.name).symlink_to(path)
            elif top in ("..", "__pycache__") or top.endswith(".pth") or (folder / top).exists():
                continue
            else:
                (folder / top).symlink_to(str(dist.locate_file(top)))
    return folder


@pytest.fixture(scope="module")
def farms(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("farms")
    project = PYPROJECT["project"]
    runtime = _distributions(project["dependencies"])
    tools = _distributions(["mypy", "setuptools"])
    gen = _distributions(project["optional-dependencies"].get("gen", [])) - runtime - tools
    return _farm(base / "runtime", runtime | tools), _farm(base / "gen", gen)


def _checkout_copy(folder: Path) -> Path:
    """What pip needs to build taskell, copied, so that builds write nothing into the checkout."""
    ignore = shutil.ignore_patterns("__pycache__")
    folder.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, folder / name)
    for name in ("taskell", "codegen"):
        shutil.copytree(ROOT / name, folder / name, ignore=ignore)
    return folder


def _run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH")}
    return subprocess.run(
        command, cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=300, check=False
    )


class Install(NamedTuple):
    python: Path  # the venv's python
    source: Path  # the copy of the checkout it was installed from
    project: Path  # the user's project, outside both


def _install(base: Path, farms: tuple[Path, Path], editable: bool) -> Install:
    source = _checkout_copy(base / "taskell-src")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", base / "venv"], check=True)
    python = base / "venv" / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(_run([str(python), "-c", purelib], base).stdout.strip())
    (site / "deps.pth").write_text(f"{farms[0]}\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
    options = ["--no-build-isolation", "--disable-pip-version-check", *(["-e"] if editable else [])]
    proc = _run([*pip, *options, str(source)], base)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # The user's project, with the package `shop` generated into it by the venv's taskell gen.
    project = base / "project"
    project.mkdir()
    (project / "tasks.schema.yaml").write_text(SCHEMA)
    gen = [str(python.parent / "taskell"), "gen", "tasks.schema.yaml", "-o", "."]
    proc = _run(gen, project, PYTHONPATH=str(farms[1]))
    assert proc.returncode == 0, proc.stderr
    (project / "good.py").write_text(GOOD)
    (project / "bad.py").write_text(BAD)
    return Install(python, source, project)


@pytest.fixture(scope="module")
def installs(tmp_path_factory: pytest.TempPathFactory, farms: tuple[Path, Path]) -> Callable[[bool], Install]:
    """Builds the install (`pip install -e .` when editable, else `pip install .`) on first use."""
    made: dict[bool, Install] = {}

    def get(editable: bool) -> Install:
        if editable not in made:
            made[editable] = _install(tmp_path_factory.mktemp("install"), farms, editable)
        return made[editable]

    return get


BOTH = pytest.mark.parametrize("editable", [False, True], ids=["pip install .", "pip install -e ."])


def _errors(output: str) -> dict[str, dict[int, str]]:
    found: dict[str, dict[int, str]] = {}
    for line in output.splitlines():
        match = re.match(r"(.+?):(\d+): error: .*\[([\w-]+)\]$", line)
        if match:
            found.setdefault(match[1], {})[int(match[2])] = match[3]
    return found


@BOTH
def test_user_mypy_strict_checks_taskell_and_generated_code(
    installs: Callable[[bool], Install], editable: bool
) -> None:
    install = installs(editable)
    assert not [p for p in install.project.iterdir() if p.suffix in (".ini", ".toml", ".cfg")]
    mypy = [str(install.python), "-m", "mypy", "--strict", "--no-pretty"]
    proc = _run([*mypy, "good.py", "bad.py"], install.project)
    assert not proc.stderr, proc.stderr
    expected = {
        number: match[1]
        for number, text in enumerate(BAD.splitlines(), 1)
        if (match := re.search(r"# E: ([\w-]+)", text))
    }
    assert _errors(proc.stdout) == {"bad.py": expected}, proc.stdout
    assert "pika" not in proc.stdout


def test_user_mypy_checking_taskell_as_source_says_nothing_of_pika(
    installs: Callable[[bool], Install],
) -> None:
    install = installs(False)
    # As with MYPYPATH pointing at a checkout: taskell's own code is checked under the user's
    # --strict, without the project's mypy configuration.
    mypy = [str(install.python), "-m", "mypy", "--strict", "--no-pretty", "--cache-dir", ".mypy-src"]
    proc = _run([*mypy, "good.py"], install.project, MYPYPATH=str(install.source))
    assert proc.returncode == 0 and "pika" not in proc.stdout, proc.stdout + proc.stderr


@BOTH
def test_codegen_is_taskell_codegen_only(
    installs: Callable[[bool], Install], editable: bool, farms: tuple[Path, Path]
) -> None:
    install = installs(editable)
    code = "import importlib.util, taskell.codegen; print(importlib.util.find_spec('codegen'))"
    proc = _run([str(install.python), "-P", "-c", code], install.project, PYTHONPATH=str(farms[1]))
    assert proc.stdout.strip() == "None", proc.stdout + proc.stderr


@BOTH
def test_runtime_needs_no_generator_dependencies(installs: Callable[[bool], Install], editable: bool) -> None:
    # Every runtime module of the checkout is installed (a subpackage missing from pyproject's
    # package list fails here) and imports in a venv with taskell's runtime dependencies only;
    # a module of an extra's (the dashboard's app) is installed and fails to import for want of it.
    modules = sorted(
        ".".join(("taskell", *path.relative_to(ROOT / "taskell").with_suffix("").parts)).removesuffix(
            ".__init__"
        )
        for path in (ROOT / "taskell").rglob("*.py")
        if path.name != "__main__.py"
    )
    of_extras = {"taskell.dashboard.app": "starlette"}
    code = textwrap.dedent(
        f"""
        import importlib, importlib.util, sys
        for name in {modules!r}:
            if name in {of_extras!r}:
                assert importlib.util.find_spec(name) is not None, name
                try:
                    importlib.import_module(name)
                except ModuleNotFoundError as exc:
                    assert exc.name == {of_extras!r}[name], exc
                else:
                    raise AssertionError(name + " imported without its extra")
            else:
                importlib.import_module(name)
        import pathlib, taskell.dashboard  # its page ships as package data
        static = pathlib.Path(taskell.dashboard.__file__).parent / "static"
        assert {{p.name for p in static.iterdir()}} >= {{"index.html", "dashboard.js", "dashboard.css"}}
        print(sorted({{"jinja2", "yaml", "ruff"}} & set(sys.modules)))
        """
    )
    install = installs(editable)
    proc = _run([str(install.python), "-P", "-c", code], install.project)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "command", [["gen", "tasks.schema.yaml"], ["call", "tasks.schema.yaml", "place", "{}"]]
)
def test_schema_commands_without_the_gen_extra(
    installs: Callable[[bool], Install], command: list[str]
) -> None:
    install = installs(False)
    proc = _run([str(install.python.parent / "taskell"), *command], install.project)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "pip install 'taskell[gen]'" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (install.project / "generated").exists()


def test_ruff_is_pinned_as_in_the_lock() -> None:
    # The generator promises byte-identical output, so the extra pins the formatter exactly.
    gen = [Requirement(text) for text in PYPROJECT["project"]["optional-dependencies"]["gen"]]
    (ruff,) = [r for r in gen if r.name == "ruff"]
    locked = re.search(r"^ruff==(\S+)$", (ROOT / "requirements.lock").read_text(), re.MULTILINE)
    assert locked and str(ruff.specifier) == f"=={locked[1]}"


def _doc_settings() -> list[str]:
    text = (ROOT / "docs" / "typing.md").read_text()
    return re.findall(r"^```toml\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("settings", _doc_settings(), ids=["strict", "pydantic-plugin"])
def test_the_documented_mypy_settings(
    installs: Callable[[bool], Install], settings: str, tmp_path: Path
) -> None:
    # Each configuration docs/typing.md offers gives the same verdicts as bare --strict.
    project = shutil.copytree(installs(False).project, tmp_path / "project")
    (project / "pyproject.toml").write_text(settings)
    proc = _run([str(installs(False).python), "-m", "mypy", "--no-pretty", "good.py", "bad.py"], project)
    expected = {
        number: match[1]
        for number, text in enumerate(BAD.splitlines(), 1)
        if (match := re.search(r"# E: ([\w-]+)", text))
    }
    assert _errors(proc.stdout) == {"bad.py": expected}, proc.stdout + proc.stderr
