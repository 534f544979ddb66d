"""Docs cannot rot: every fenced block of README.md and docs/*.md is compiled, loaded, run or
compared here (the conventions are in ``_blocks.py``).

Pages whose blocks need a broker run against ``TASKELL_TEST_URL`` with a worker for the demo
tasks; without a broker they fail when ``CI`` is set and are skipped otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pika  # type: ignore[import-untyped]
import pydantic
import pytest

import taskell
from taskell.codegen import generate_sources, parse_schema
from tests.docs._blocks import DOC_URL, ROOT, Block, blocks, pages
from tests.support import stop_process

TEST_URL = os.environ.get("TASKELL_TEST_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
NO_BROKER_URL = "amqp://guest:guest@127.0.0.1:1/%2F"  # nothing listens on port 1: fails at once
BIN = Path(sys.executable).parent
RUNNER = Path(__file__).with_name("_runner.py")
TIMEOUT = 60.0  # any one block or command
CHECKED = ("yaml", "toml", "python", "bash")
_EXIT = re.compile(r"\[exit (\d+)\]")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")

PAGES = {str(p.relative_to(ROOT)): p for p in pages()}
# Pages other work writes (the architecture note after the refactors, the mypy setup with the
# packaging): links to them are allowed before they exist; every other link must resolve.
WRITTEN_ELSEWHERE = {ROOT / "docs" / "typing.md"}


def _all_blocks() -> list[Block]:
    return [b for p in PAGES.values() for b in blocks(p)]


def _command_lines(text: str) -> list[str]:
    """The commands of a bash block: non-blank lines that are not whole-line comments."""
    return [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def _program(line: str) -> str:
    words = shlex.split(line, comments=True)
    while words and _ASSIGNMENT.match(words[0]):
        words.pop(0)
    return words[0] if words else ""


def _problems(page_blocks: list[Block]) -> list[str]:
    """Why some block of a page cannot be checked (empty when all can)."""
    problems = []
    previous: Block | None = None
    for block in page_blocks:
        d = block.directives
        if not block.lang:
            problems.append(f"{block.where}: fenced block without a language tag")
        elif "skip" in d:
            pass
        elif "output" in d:
            if previous is None or "skip" in previous.directives or previous.lang not in CHECKED:
                problems.append(f"{block.where}: 'output' must follow a checked block")
        elif block.lang not in CHECKED:
            problems.append(f"{block.where}: a {block.lang!r} block must be marked 'output' or 'skip REASON'")
        elif block.lang == "bash":
            for line in _command_lines(block.text):
                if _program(line) != "taskell":
                    problems.append(f"{block.where}: cannot check {line.strip()!r} (not a taskell command)")
        if "continue" in d and block.lang != "python":
            problems.append(f"{block.where}: only python blocks continue")
        if "error" in d and block.lang not in ("yaml", "toml"):
            problems.append(f"{block.where}: 'error' is for yaml and toml blocks")
        previous = block
    return problems


# --- checks of the text itself ---------------------------------------------------------------


def test_every_block_is_tagged_and_checkable() -> None:
    problems = [p for path in PAGES.values() for p in _problems(blocks(path))]
    assert problems == []


def test_an_unmarked_unknown_block_is_refused(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```\nx\n```\n\n```sh\nls\n```\n\n```bash\nrm -rf build\n```\n")
    found = _problems(blocks(page))
    assert [p.split(": ", 1)[1] for p in found] == [
        "fenced block without a language tag",
        "a 'sh' block must be marked 'output' or 'skip REASON'",
        "cannot check 'rm -rf build' (not a taskell command)",
    ]


@pytest.mark.parametrize(
    ("page", "complaint"),
    [
        ("```python\nprint(1)\n```\n\n<!-- docs: output -->\n```text\n2\n```\n", "output differs"),
        ("```bash\ntaskell gen missing.schema.yaml\n```\n", "exited 1, not 0"),
        ("```bash\ntaskell gen --no-such-flag    # [exit 1]\n```\n", "exited 2, not 1"),
        ("```yaml\ntaskell: 1\npackage: Shop\n```\n", "schema rejected"),
        ("<!-- docs: error -->\n```yaml\ntaskell: 1\npackage: shop\n```\n", "DID NOT RAISE"),
        ("```python\nraise ValueError('no')\n```\n", "the block raised"),
    ],
)
def test_a_block_that_does_not_do_what_it_shows_fails(page: str, complaint: str, tmp_path: Path) -> None:
    path = tmp_path / "page.md"
    path.write_text(page)
    with ExitStack() as stack, pytest.raises(BaseException, match=complaint):
        runner = _Page("page.md", tmp_path, TEST_URL, stack)
        for block in blocks(path):
            runner.run(block)


def test_nothing_points_outside_the_repository() -> None:
    for name, path in PAGES.items():
        text = path.read_text(encoding="utf-8")
        assert "../shared" not in text, name
        assert not re.search(r"\bSPEC\b", text), f"{name} mentions SPEC"
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            resolved = (path.parent / target).resolve()
            assert ROOT in resolved.parents or resolved == ROOT, (
                f"{name}: link {target} leaves the repository"
            )
            if resolved not in WRITTEN_ELSEWHERE:
                assert resolved.exists(), f"{name}: broken link {target}"


# --- running the blocks ----------------------------------------------------------------------


def _needs_broker(page: str) -> bool:
    return any("broker" in b.directives for b in blocks(PAGES[page]))


def _broker_up() -> bool:
    params = pika.URLParameters(TEST_URL)
    params.connection_attempts = 1
    params.socket_timeout = 5
    try:
        pika.BlockingConnection(params).close()
    except Exception:
        return False
    return True


def _page_params() -> list[Any]:
    params = []
    for page in PAGES:
        marks = [pytest.mark.integration] if _needs_broker(page) else []
        params.append(pytest.param(page, marks=marks, id=page))
    return params


class _Python:
    """One interpreter running a page's python blocks (``_runner.py``)."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(RUNNER)],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, code: str, filename: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"code": code, "name": filename}) + "\n")
        self.proc.stdin.flush()
        answer: list[str] = []
        stdout = self.proc.stdout
        reader = threading.Thread(target=lambda: answer.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(TIMEOUT)
        if not answer or not answer[0]:
            self.close()
            stderr = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"{filename}: no answer within {TIMEOUT} s\n{stderr}")
        result: dict[str, Any] = json.loads(answer[0])
        return result

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


class _Page:
    """Runs one page's blocks in order in a scratch working directory."""

    def __init__(self, page: str, workdir: Path, url: str, stack: ExitStack) -> None:
        self.page = page
        self.workdir = workdir
        self.url = url
        self.stack = stack
        shutil.copy(ROOT / "tasks.schema.yaml", workdir)
        for folder in ("generated", "examples"):
            shutil.copytree(ROOT / folder, workdir / folder, ignore=shutil.ignore_patterns("__pycache__"))
        self.python: _Python | None = None
        self.output: str | None = None  # of the last checked block
        self.output_lang = ""

    def env(self, broker: bool) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKELL_")}
        env["TASKELL_URL"] = self.url if broker else NO_BROKER_URL
        env["PYTHONPATH"] = str(self.workdir)
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONUNBUFFERED"] = "1"
        env["COLUMNS"] = "100"
        return env

    def text(self, block: Block) -> str:
        return block.text.replace(DOC_URL, self.url if "broker" in block.directives else NO_BROKER_URL)

    def run(self, block: Block) -> None:
        d = block.directives
        if "skip" in d:
            return
        if "output" in d:
            self.compare(block)
            return
        if "file" in d:
            (self.workdir / d["file"]).write_text(block.text, encoding="utf-8")
        getattr(self, f"run_{block.lang}")(block)
        self.output_lang = block.lang

    def compare(self, block: Block) -> None:
        assert self.output is not None, f"{block.where}: nothing to compare with"
        if block.lang == "json":
            assert json.loads(self.output) == json.loads(block.text), f"{block.where}: output differs"
        else:
            want = [ln.rstrip() for ln in block.text.strip("\n").splitlines()]
            got = [ln.rstrip() for ln in self.output.strip("\n").splitlines()]
            assert got == want, f"{block.where}: output differs"

    def run_yaml(self, block: Block) -> None:
        name = block.directives.get("file", "schema.yaml")
        if "error" in block.directives:
            with pytest.raises(taskell.SchemaError) as info:
                parse_schema(block.text, name)
            self.output = "\n".join(info.value.errors)
            return
        try:
            schema = parse_schema(block.text, name)
        except taskell.SchemaError as exc:
            raise AssertionError(f"{block.where}: schema rejected:\n{exc}") from None
        sources = generate_sources(schema, name, block.text.encode())
        for file_name, source in sources.items():
            compile(source, f"{block.where}/{schema.package}/{file_name}", "exec")
        self.output = ""

    def run_toml(self, block: Block) -> None:
        name = block.directives.get("file", "taskell.toml")
        path = self.workdir / name
        path.write_text(block.text, encoding="utf-8")
        if "error" in block.directives:
            with pytest.raises(taskell.ConfigError) as info:
                taskell.Config.load(path, env={})
            self.output = str(info.value).replace(str(path), name)  # as if loaded from its directory
            return
        config = taskell.Config.load(path, env={})
        shown = tomllib.loads(block.text).get("taskell", {})
        _assert_values(config.model_dump(), shown, block.where, "taskell")
        self.output = ""

    def run_python(self, block: Block) -> None:
        broker = "broker" in block.directives
        if "continue" not in block.directives or self.python is None:
            if self.python is not None:
                self.python.close()
            self.python = _Python(self.workdir, self.env(broker))
            self.stack.callback(self.python.close)
        filename = self.workdir / f"docs_block_{block.line}.py"
        code = self.text(block)
        filename.write_text(code, encoding="utf-8")
        answer = self.python.run(code, str(filename))
        assert answer["ok"], f"{block.where}: the block raised:\n{answer['error']}"
        self.output = answer["stdout"]

    def run_bash(self, block: Block) -> None:
        env = self.env("broker" in block.directives)
        outputs = []
        for line in _command_lines(self.text(block)):
            comment = line.partition(" #")[2]
            if "[background]" in comment:
                self.start_worker(line, env, block)
                continue
            expected = int(m[1]) if (m := _EXIT.search(comment)) else 0
            done = subprocess.run(
                ["bash", "-c", line],
                cwd=self.workdir,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=TIMEOUT,
                check=False,
            )
            assert done.returncode == expected, (
                f"{block.where}: {line.strip()!r} exited {done.returncode}, not {expected}:\n{done.stdout}"
            )
            outputs.append(done.stdout)
        self.output = "".join(outputs)

    def start_worker(self, line: str, env: dict[str, str], block: Block) -> None:
        """Start a ``taskell worker`` that runs until the page ends, then must stop cleanly."""
        assert shlex.split(line, comments=True)[1] == "worker", (
            f"{block.where}: only a worker runs in the background"
        )
        log = self.workdir / f"worker-{block.line}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["bash", "-c", f"exec {line}"],
                cwd=self.workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

        def stop() -> None:
            stop_process(proc)
            assert proc.returncode == 0, (
                f"{block.where}: the worker exited {proc.returncode}:\n{log.read_text()}"
            )

        self.stack.callback(stop)
        deadline = time.monotonic() + 30
        while " consuming " not in log.read_text(errors="replace"):
            assert proc.poll() is None, (
                f"{block.where}: the worker exited {proc.returncode}:\n{log.read_text()}"
            )
            assert time.monotonic() < deadline, f"{block.where}: the worker did not start:\n{log.read_text()}"
            time.sleep(0.05)


def _assert_values(loaded: dict[str, Any], shown: dict[str, Any], where: str, prefix: str) -> None:
    """Every value a toml block shows is the value ``Config.load`` gives."""
    for key, value in shown.items():
        got = loaded[key]
        if isinstance(value, dict):
            _assert_values(got, value, where, f"{prefix}.{key}")
            continue
        if isinstance(got, pydantic.SecretStr):
            got = got.get_secret_value()
        assert got == value, f"{where}: {prefix}.{key} loads as {got!r}, not {value!r}"


@pytest.fixture(scope="module")
def demo_worker() -> Iterator[None]:
    """A worker for the demo tasks on the test broker, for the pages whose blocks submit them."""
    if not _broker_up():
        message = f"RabbitMQ not reachable at {TEST_URL} (set TASKELL_TEST_URL)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from examples.worker import Impl
    from generated.demo import registry

    with taskell.Worker(registry(Impl()), taskell.Config.from_url(TEST_URL), parallelism=4):
        yield


@pytest.mark.parametrize("page", _page_params())
def test_page(page: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if _needs_broker(page):
        request.getfixturevalue("demo_worker")
    with ExitStack() as stack:
        runner = _Page(page, tmp_path, TEST_URL, stack)
        for block in blocks(PAGES[page]):
            runner.run(block)
