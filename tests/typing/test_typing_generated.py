"""mypy --strict accepts correct uses of generated/demo and rejects wrong ones.

Each snippet marks the lines mypy must reject with ``# E: <error code>``; every other line must
pass. All snippets are checked in one mypy run (mypy is slow), then compared per line.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from mypy import api

ROOT = Path(__file__).resolve().parents[2]

PRELUDE = """\
import datetime
import decimal
import uuid
from collections.abc import Sequence
import taskell
import taskell.aio
from generated.demo import AsyncClient, AsyncHandlers, Client, Color, Handlers, Image, registry
from generated.demo import models

def conn() -> taskell.Connection:
    raise NotImplementedError
demo = Client(conn())
def aconn() -> taskell.aio.Connection:
    raise NotImplementedError
ademo = AsyncClient(aconn())
"""

CLIENT_SNIPPETS = {
    "client_ok": """
        h = demo.sum(numbers=[1, 2, 3])
        total: int = h.result(timeout=30)
        pct: int | None = h.latest_progress
        for p in h.progress():
            q: int = p
        nums: list[int] = [4, 5]
        demo.sum(numbers=nums)
        demo.sum(numbers=(1, 2))
        sq = demo.square(x=h)
        s2: int = demo.square(x=sq).result()
        demo.total(parts=[1, sq, demo.square(x=2)])
        many: list[taskell.Ref[int]] = [sq]
        demo.total(parts=many)
        img = Image(width=1, height=1, pixels=b"\\x00")
        thumb = demo.thumbnail(image=img)
        demo.thumbnail(image=thumb, size=demo.square(x=3), after=[h, sq])
        out: Image = thumb.result()
        refs: Sequence[taskell.Ref[object]] = [h]
        demo.fail(after=refs)
        none: None = demo.fail(message="x").result()
        order = models.Order(id=uuid.uuid4(), placed_at=datetime.datetime.now(datetime.UTC), amount=decimal.Decimal(1))
        demo.book(order=order, coupon=b"\\xff")
        """,
    "client_wrong_type": """
        demo.square(x="a")  # E: arg-type
        demo.sum(numbers=["a"])  # E: list-item
        demo.thumbnail(image=demo.square(x=1))  # E: arg-type
        demo.book(order=models.Order(id=1, placed_at=2, amount=3), coupon="AP8=")  # E: arg-type
        """,
    "record_constructor": """
        now = datetime.datetime.now(datetime.UTC)
        models.Order(id=uuid.uuid4(), placed_at=now, amount=decimal.Decimal(1), tags=("a",))
        models.Order(id=uuid.uuid4(), placed_at=None, amount=decimal.Decimal(1))  # E: arg-type
        models.Order(id=uuid.uuid4(), placed_at=now, amount="1")  # E: arg-type
        models.Order(id=uuid.uuid4(), amount=decimal.Decimal(1))  # E: call-arg
        models.Order(id=uuid.uuid4(), placed_at=now, amount=decimal.Decimal(1), colour="red")  # E: call-arg
        Image(width="1", height=1, pixels=b"")  # E: arg-type
        """,
    "declared_error": """
        def check(cond: bool) -> None:
            if cond:
                raise models.DiscountTooLarge(discount=decimal.Decimal(2), limit=decimal.Decimal(1))
            try:
                demo.book(order=models.Order(id=uuid.uuid4(), placed_at=datetime.datetime.now(datetime.UTC), amount=decimal.Decimal(1))).result()
            except models.DiscountTooLarge as exc:
                over: decimal.Decimal = exc.discount - exc.limit
                where: str = exc.task_id
            except taskell.TaskFailed as failed:
                kind: str = failed.error_type
        models.DiscountTooLarge(discount="2", limit=decimal.Decimal(1))  # E: arg-type
        models.DiscountTooLarge(discount=decimal.Decimal(2))  # E: call-arg
        models.DiscountTooLarge(discount=decimal.Decimal(2), limit=decimal.Decimal(1), reason="x")  # E: call-arg
        models.DiscountTooLarge(decimal.Decimal(2), decimal.Decimal(1))  # E: call-arg
        """,
    "client_missing_arg": """
        demo.square()  # E: call-arg
        """,
    "client_unknown_arg": """
        demo.square(x=1, y=2)  # E: call-arg
        demo.square(1)  # E: call-arg
        """,
    "client_ref_mismatch": """
        def handle() -> taskell.TaskHandle[int, str]:
            raise NotImplementedError
        demo.square(x=handle())  # E: arg-type
        demo.total(parts=[1, handle()])  # E: list-item
        """,
    "attach_typed_from_the_spec": """
        sum_again = taskell.attach(conn(), models.SUM, "some-task-id")
        again: int = sum_again.result()
        wrong: str = taskell.attach(conn(), models.SQUARE, "id").result()  # E: assignment
        """,
    "fire_is_typed_from_the_stub": """
        task_id: str = taskell.fire(demo.square, x=3)
        taskell.fire(demo.square, x="three")  # E: arg-type
        """,
    "schedules_are_typed": """
        from generated.demo import SCHEDULES
        for schedule in SCHEDULES:
            wire_name: str = schedule.task.name
            every: float | None = schedule.every
            name: int = schedule.name  # E: assignment
        SCHEDULES.append(SCHEDULES[0])  # E: attr-defined
        """,
    "client_wrong_result": """
        s: str = demo.sum(numbers=[1]).result()  # E: assignment
        p: str | None = demo.sum(numbers=[1]).latest_progress  # E: assignment
        """,
}

# taskell.aio: submitting returns the handle at once; its result, abort and progress are awaited.
ASYNC_SNIPPETS = {
    "aio_ok": """
        async def main() -> None:
            h = ademo.sum(numbers=[1, 2, 3])
            total: int = await h
            again: int = await h.result(timeout=3)
            async for p in h.progress():
                q: int = p
            pct: int | None = h.latest_progress
            sq = ademo.square(x=h)
            s2: int = await ademo.square(x=sq)
            ademo.total(parts=[1, sq, ademo.square(x=2)])
            demo.square(x=ademo.square(x=2))
            ademo.square(x=demo.square(x=2), after=[h, demo.fail()])
            ref: taskell.Ref[int] = h
            aborted: bool = await h.abort()
            done: bool = h.done()
            retries: list[taskell.Retrying] = h.retries
            task_id: str = h.id
            delayed: taskell.aio.TaskHandle[None, int] = AsyncClient(aconn().options(delay=1, priority=3)).square(x=1)
            fired: str = taskell.aio.fire(ademo.square, x=3)
            slept: float = await (await taskell.aio.attach(aconn(), models.SLEEP, "id"))
            async with taskell.aio.connect("amqp://localhost") as c:
                out: Image = await AsyncClient(c).thumbnail(image=Image(width=1, height=1, pixels=b""))
            c2 = await taskell.aio.connect(config=taskell.Config.from_url("amqp://localhost"))
            await c2.flush(timeout=1)
            answers: list[dict[str, object]] = await c2.abort(task_id, wait=0.5)
            await c2.close()
        """,
    "aio_result_needs_await": """
        async def main() -> None:
            h = ademo.square(x=1)
            n: int = h  # E: assignment
            m: int = h.result()  # E: assignment
            h.result(timeout=1)  # E: unused-coroutine
            h.abort()  # E: unused-coroutine
            aborted: bool = h.abort()  # E: assignment
            for p in h.progress():  # E: attr-defined
                pass
            with taskell.aio.connect("amqp://localhost") as c:  # E: attr-defined
                pass
        """,
    "aio_wrong_result_type": """
        async def main() -> None:
            h = ademo.square(x=1)
            s: str = await h  # E: assignment
            t: str = await h.result(timeout=1)  # E: assignment
            async for p in ademo.sum(numbers=[1]).progress():
                q: str = p  # E: assignment
            r: str = await (await taskell.aio.attach(aconn(), models.SQUARE, "id"))  # E: arg-type
        """,
    "aio_wrong_args": """
        ademo.square(x="a")  # E: arg-type
        ademo.sum(numbers=["a"])  # E: list-item
        ademo.thumbnail(image=ademo.square(x=1))  # E: arg-type
        ademo.square()  # E: call-arg
        ademo.square(1)  # E: call-arg
        AsyncClient(conn())  # E: arg-type
        Client(aconn())  # E: arg-type
        taskell.aio.fire(ademo.square, x="three")  # E: arg-type
        taskell.aio.fire(demo.square, x=3)  # E: arg-type
        """,
}

GOOD_IMPL = """\
class Impl:
    def sum(self, ctx: taskell.Context[int], numbers: list[int]) -> int:
        raise NotImplementedError
    def square(self, context: taskell.Context[None], x: int) -> int:
        raise NotImplementedError
    def total(self, ctx: taskell.Context[None], *, parts: list[int]) -> int:
        raise NotImplementedError
    def thumbnail(self, ctx: taskell.Context[None], image: Image, size: int = 128) -> Image:
        raise NotImplementedError
    def book(self, ctx: taskell.Context[str], order: models.Order, discount: object = None, coupon: bytes = b"") -> models.Receipt:
        raise NotImplementedError
    def tree_sum(self, ctx: taskell.Context[None], tree: models.Tree) -> int:
        raise NotImplementedError
    def sleep(self, ctx: taskell.Context[float], seconds: float) -> float:
        raise NotImplementedError
    def fail(self, ctx: taskell.Context[None], message: str = "boom") -> None:
        raise NotImplementedError
"""

WORKER_SNIPPETS = {
    "worker_ok": GOOD_IMPL + "\nreg: taskell.Registry = registry(Impl())\nh: Handlers = Impl()\n",
    "worker_wrong_param": GOOD_IMPL.replace("x: int) -> int", "x: str) -> int")
    + "\nregistry(Impl())  # E: arg-type\n",
    "worker_wrong_return": GOOD_IMPL.replace("numbers: list[int]) -> int", "numbers: list[int]) -> str")
    + "\nregistry(Impl())  # E: arg-type\n",
    "worker_wrong_progress": GOOD_IMPL.replace("ctx: taskell.Context[float]", "ctx: taskell.Context[str]")
    + "\nregistry(Impl())  # E: arg-type\n",
    "worker_missing_task": GOOD_IMPL.replace("    def fail(", "    def fial(")
    + "\nregistry(Impl())  # E: arg-type\n",
}

GOOD_ASYNC_IMPL = GOOD_IMPL.replace("    def ", "    async def ").replace("class Impl:", "class AsyncImpl:")

ASYNC_WORKER_SNIPPETS = {
    "async_worker_ok": GOOD_ASYNC_IMPL
    + "\nreg: taskell.Registry = registry(AsyncImpl())\nh: AsyncHandlers = AsyncImpl()\n",
    "async_worker_wrong_return": GOOD_ASYNC_IMPL.replace(
        "numbers: list[int]) -> int", "numbers: list[int]) -> str"
    )
    + "\nregistry(AsyncImpl())  # E: arg-type\n",
    "async_worker_sync_def_among_async": GOOD_ASYNC_IMPL.replace("async def square", "def square")
    + "\nregistry(AsyncImpl())  # E: arg-type\n",
    "async_worker_wrong_param": GOOD_ASYNC_IMPL.replace("x: int) -> int", "x: str) -> int")
    + "\nregistry(AsyncImpl())  # E: arg-type\n",
    "async_worker_wrong_progress": GOOD_ASYNC_IMPL.replace(
        "ctx: taskell.Context[float]", "ctx: taskell.Context[str]"
    )
    + "\nregistry(AsyncImpl())  # E: arg-type\n",
    "async_impl_is_not_sync_handlers": GOOD_ASYNC_IMPL
    + GOOD_IMPL
    + "\nh: Handlers = AsyncImpl()  # E: assignment\ng: AsyncHandlers = Impl()  # E: assignment\n",
    "registry_add_async_is_typed": """
        async def square(ctx: taskell.Context[None], args: models.SquareArgs) -> int:
            return args.x * args.x
        async def wrong(ctx: taskell.Context[None], args: models.SquareArgs) -> str:
            return ""
        reg = taskell.Registry()
        reg.add_async(models.SQUARE, square)
        reg.add_async(models.SQUARE, wrong)  # E: arg-type
        reg.add(models.SQUARE, square)  # E: arg-type
        """,
}
WORKER_SNIPPETS |= ASYNC_WORKER_SNIPPETS


def _write(tmp: Path) -> dict[str, Path]:
    files = {}
    for name, body in {**CLIENT_SNIPPETS, **ASYNC_SNIPPETS, **WORKER_SNIPPETS}.items():
        path = tmp / f"{name}.py"
        path.write_text(PRELUDE + textwrap.dedent(body))
        files[name] = path
    return files


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[int, list[str]]]:
    files = _write(tmp_path_factory.mktemp("snippets"))
    stdout, stderr, _ = api.run(
        [
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache" / "typing-tests"),
            "--show-error-codes",
            "--no-pretty",
            *map(str, files.values()),
        ]
    )
    assert not stderr, stderr
    found: dict[str, dict[int, list[str]]] = {name: {} for name in files}
    for line in stdout.splitlines():
        match = re.match(r"(.+?):(\d+): error: (.*)$", line)
        if match:
            found[Path(match[1]).stem].setdefault(int(match[2]), []).append(match[3])
    return found


@pytest.mark.parametrize("name", [*CLIENT_SNIPPETS, *ASYNC_SNIPPETS, *WORKER_SNIPPETS])
def test_snippet(name: str, mypy_errors: dict[str, dict[int, list[str]]]) -> None:
    body = PRELUDE + textwrap.dedent({**CLIENT_SNIPPETS, **ASYNC_SNIPPETS, **WORKER_SNIPPETS}[name])
    expected = {
        number: match[1]
        for number, text in enumerate(body.splitlines(), 1)
        if (match := re.search(r"# E: ([\w-]+)", text))
    }
    got = mypy_errors[name]
    assert set(got) == set(expected), (
        f"{name}: errors on lines {sorted(got)}, expected {sorted(expected)}: {got}"
    )
    for number, code in expected.items():
        assert any(message.endswith(f"[{code}]") for message in got[number]), (name, number, got[number])
