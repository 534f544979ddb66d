"""Issue 3, point 8: the ``taskell`` command line against a real broker (as subprocesses)."""

from __future__ import annotations

import json
import logging
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika  # type: ignore[import-untyped]
import pytest

import taskell
from examples.worker import Impl
from generated.demo import SUM, Client, registry
from tests.support import RESULT_TIMEOUT, ROOT, TASKELL, cli_env, stop_process, wait_consuming, wait_until

Cli = Callable[..., "subprocess.CompletedProcess[str]"]
CLOSED_PORT_URL = "amqp://guest:guest@127.0.0.1:1/%2F"


def _explain(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"


def test_call_prints_the_result(taskell_cli: Cli, worker: taskell.Worker) -> None:
    proc = taskell_cli("call", "tasks.schema.yaml", "sum", '{"numbers":[1,2,3]}', "--timeout", "30")
    assert proc.returncode == 0, _explain(proc)
    assert proc.stdout.strip() == "6", _explain(proc)


def test_call_follow_draws_progress_on_stderr(taskell_cli: Cli, worker: taskell.Worker) -> None:
    numbers = json.dumps({"numbers": list(range(50))})
    proc = taskell_cli("call", "tasks.schema.yaml", "sum", numbers, "--follow", "--timeout", "30")
    assert proc.returncode == 0, _explain(proc)
    assert proc.stdout.strip() == str(sum(range(50))), _explain(proc)
    assert "100%" in proc.stderr, _explain(proc)
    assert "100%" not in proc.stdout, "progress belongs on stderr"


def test_call_no_wait_prints_the_task_id(taskell_cli: Cli, amqp: Any) -> None:
    proc = taskell_cli("call", "tasks.schema.yaml", "square", '{"x": 4}', "--no-wait")
    assert proc.returncode == 0, _explain(proc)
    task_id = proc.stdout.strip()
    assert str(uuid.UUID(task_id)) == task_id, _explain(proc)
    method, props, body = amqp.basic_get("taskell.q1", auto_ack=True)
    assert method is not None, "--no-wait must still publish (confirmed) before exiting"
    assert props.message_id == task_id and props.type == "demo.square"
    assert json.loads(body) == {"x": 4}


def test_call_bad_input_exits_1(taskell_cli: Cli) -> None:
    unknown = taskell_cli("call", "tasks.schema.yaml", "nope", "{}", "--timeout", "5")
    assert unknown.returncode == 1, _explain(unknown)
    assert "nope" in unknown.stderr, _explain(unknown)
    not_json = taskell_cli("call", "tasks.schema.yaml", "sum", "{numbers: [1", "--timeout", "5")
    assert not_json.returncode == 1, _explain(not_json)
    invalid = taskell_cli("call", "tasks.schema.yaml", "sum", '{"numbers": "abc"}', "--timeout", "5")
    assert invalid.returncode == 1, _explain(invalid)
    assert "numbers" in invalid.stderr, _explain(invalid)
    for proc in (unknown, not_json, invalid):
        assert "Traceback" not in proc.stderr, _explain(proc)


def test_call_failing_task_exits_1(taskell_cli: Cli, worker: taskell.Worker) -> None:
    proc = taskell_cli("call", "tasks.schema.yaml", "fail", '{"message": "cli boom"}', "--timeout", "30")
    assert proc.returncode == 1, _explain(proc)
    assert "cli boom" in proc.stderr, _explain(proc)


def test_broker_unavailable_exits_3(taskell_cli: Cli) -> None:
    proc = taskell_cli(
        "call", "tasks.schema.yaml", "sum", '{"numbers":[1]}', "--timeout", "5", url=CLOSED_PORT_URL
    )
    assert proc.returncode == 3, _explain(proc)
    assert "Traceback" not in proc.stderr, _explain(proc)
    inspect = taskell_cli("inspect", "--wait", "0.1", url=CLOSED_PORT_URL)
    assert inspect.returncode == 3, _explain(inspect)


def test_usage_error_exits_2(taskell_cli: Cli) -> None:
    missing = taskell_cli("call", "tasks.schema.yaml")
    assert missing.returncode == 2, _explain(missing)
    unknown_command = taskell_cli("frobnicate")
    assert unknown_command.returncode == 2, _explain(unknown_command)
    bad_flag = taskell_cli("call", "tasks.schema.yaml", "sum", "{}", "--timeout", "soon")
    assert bad_flag.returncode == 2, _explain(bad_flag)
    no_command = taskell_cli()
    assert no_command.returncode == 2, _explain(no_command)
    bad_id = taskell_cli("abort", "not-an-id")
    assert bad_id.returncode == 2, _explain(bad_id)
    assert "not-an-id" in bad_id.stderr and "UUID" in bad_id.stderr, _explain(bad_id)


def test_call_timeout_names_a_readable_duration(taskell_cli: Cli) -> None:
    # No worker: the task stays queued and the call times out.
    proc = taskell_cli("call", "tasks.schema.yaml", "square", '{"x": 2}', "--timeout", "0.5")
    assert proc.returncode == 1, _explain(proc)
    assert "timed out after 0.5 s" in proc.stderr, _explain(proc)
    assert "Traceback" not in proc.stderr, _explain(proc)


def test_inspect_lists_the_running_worker(taskell_cli: Cli, worker: taskell.Worker) -> None:
    proc = taskell_cli("inspect", "--wait", "1")
    assert proc.returncode == 0, _explain(proc)
    answers = json.loads(proc.stdout)
    mine = [a for a in answers if a.get("worker") == worker.name]
    assert len(mine) == 1, _explain(proc)
    assert set(mine[0]["queues"]) == {"taskell.q1", "taskell.q2", "taskell.default"}
    assert mine[0]["parallelism"] == 4
    assert mine[0]["running"] == []


def test_worker_on_a_missing_module_exits_1(taskell_cli: Cli) -> None:
    proc = taskell_cli("worker", "no_such_module_xyz:handlers")
    assert proc.returncode == 1, _explain(proc)
    assert "no_such_module_xyz" in proc.stderr, _explain(proc)


def _dead_letter(amqp: Any, task_id: str, task_type: str, queue: str) -> None:
    """Publish a message to ``taskell.dead`` as a worker dead-letters one from ``queue``."""
    amqp.basic_publish(
        "",
        "taskell.dead",
        b'{"x": 1}',
        pika.BasicProperties(
            message_id=task_id,
            type=task_type,
            content_type="application/json",
            delivery_mode=2,
            headers={"taskell-reason": "unknown task type", "taskell-queue": queue},
        ),
        mandatory=True,
    )


def test_dead_letters_requeue_sends_the_message_back_once(
    taskell_cli: Cli, worker: taskell.Worker, amqp: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The worker dead-letters the requeued message again at once (its type is unknown): the
    # copy lands behind the others in the dead-letter queue, where the requeue must not find
    # it again.
    caplog.set_level(logging.WARNING, logger="taskell.worker")
    amqp.confirm_delivery()
    amqp.queue_declare("taskell.dead", durable=True)
    target = str(uuid.uuid4())
    _dead_letter(amqp, target, "demo.nope", "taskell.q1")
    others = [str(uuid.uuid4()) for _ in range(30)]
    for other in others:
        _dead_letter(amqp, other, "demo.nope", "taskell.q1")

    proc = taskell_cli("dead-letters", "--requeue", target)
    assert proc.returncode == 0, _explain(proc)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and target in lines[0] and "taskell.q1" in lines[0], _explain(proc)

    wait_until(
        lambda: amqp.queue_declare("taskell.dead", passive=True).method.message_count == 1 + len(others),
        15,
        "the requeued message came back to taskell.dead",
    )
    time.sleep(0.5)  # a second requeue would have reached the worker by now
    runs = [r for r in caplog.records if r.getMessage().startswith(f"dead-lettering message {target}")]
    assert len(runs) == 1, f"requeued {len(runs)} times"


def test_dead_letters_requeue_of_an_unknown_id_exits_1(taskell_cli: Cli, amqp: Any) -> None:
    amqp.confirm_delivery()
    amqp.queue_declare("taskell.dead", durable=True)
    kept = str(uuid.uuid4())
    _dead_letter(amqp, kept, "demo.nope", "taskell.q1")
    missing = str(uuid.uuid4())
    proc = taskell_cli("dead-letters", "--requeue", missing)
    assert proc.returncode == 1, _explain(proc)
    assert missing in proc.stderr and "not found" in proc.stderr, _explain(proc)
    assert "unavailable" not in proc.stderr, _explain(proc)
    listed = taskell_cli("dead-letters")
    assert listed.returncode == 0, _explain(listed)
    assert [json.loads(line)["task_id"] for line in listed.stdout.splitlines()] == [kept]


def test_worker_that_loses_its_broker_for_good_exits_3(broker: str, tmp_path: Path) -> None:
    # A vhost of its own, deleted under the running worker: its queues and connections go.
    vhost = f"taskell-cli-lost-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
        log_path = tmp_path / "worker.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [TASKELL, "worker", "examples.worker:handlers"],
                cwd=ROOT,
                env=cli_env(url),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_consuming(taskell.Config.from_url(url), [(proc, log_path)])
            _rabbitmqctl("delete_vhost", vhost)
            returncode = proc.wait(30)
        finally:
            stop_process(proc)
    finally:
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, timeout=60, check=False
        )
    output = log_path.read_text(errors="replace")
    assert returncode == 3, output
    assert "broker unavailable" in output, output
    assert "Traceback" not in output, output


def _rabbitmqctl(*args: str) -> None:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_dead_letters_requeue_of_a_broker_dead_letter_goes_to_its_x_death_queue(
    taskell_cli: Cli, amqp: Any
) -> None:
    # Quorum queues dead-letter a task past x-delivery-limit themselves: no taskell-queue
    # header then, only the broker's x-death one.
    amqp.confirm_delivery()
    amqp.queue_declare("taskell.dead", durable=True)
    amqp.queue_declare("taskell.q2", durable=True)
    task_id = str(uuid.uuid4())
    death = {
        "queue": "taskell.q2",
        "reason": "delivery_limit",
        "count": 1,
        "exchange": "",
        "routing-keys": ["taskell.q2"],
    }
    props = pika.BasicProperties(message_id=task_id, type="demo.sum", headers={"x-death": [death]})
    amqp.basic_publish("", "taskell.dead", b'{"numbers": [1]}', props, mandatory=True)
    proc = taskell_cli("dead-letters", "--requeue", task_id)
    assert proc.returncode == 0, _explain(proc)
    assert proc.stdout.strip() == f"requeued {task_id} to queue taskell.q2", _explain(proc)
    method, got, body = amqp.basic_get("taskell.q2", auto_ack=True)
    assert method is not None and got.message_id == task_id and body == b'{"numbers": [1]}'
    assert amqp.queue_declare("taskell.dead", passive=True).method.message_count == 0, "requeued, not moved"


def test_dead_letters_requeue_to_a_queue_that_is_gone_exits_1_and_keeps_the_message(
    taskell_cli: Cli, amqp: Any
) -> None:
    amqp.confirm_delivery()
    amqp.queue_declare("taskell.dead", durable=True)
    task_id = str(uuid.uuid4())
    _dead_letter(amqp, task_id, "demo.sum", "taskell.no-such-queue")
    proc = taskell_cli("dead-letters", "--requeue", task_id)
    assert proc.returncode == 1, _explain(proc)
    assert "taskell.no-such-queue" in proc.stderr and "does not exist" in proc.stderr, _explain(proc)
    listed = taskell_cli("dead-letters")
    assert [json.loads(line)["task_id"] for line in listed.stdout.splitlines()] == [task_id], _explain(listed)


def test_a_dead_lettered_task_runs_once_requeued_after_the_fix(
    taskell_cli: Cli, config: taskell.Config, amqp: Any
) -> None:
    # The whole way: a worker that does not know demo.square (an old deployment) dead-letters
    # it; once a worker that knows it runs, the requeue sends it back and it runs, once.
    old = taskell.Registry()
    old.add(SUM, lambda ctx, args: sum(args.numbers))
    with taskell.connect(config=config) as conn:
        task_id = taskell.fire(Client(conn).square, x=3)
        with taskell.Worker(old, config):
            wait_until(
                lambda: amqp.queue_declare("taskell.dead", passive=True).method.message_count == 1,
                RESULT_TIMEOUT,
                "the old worker dead-lettered the task",
            )
    ran: list[tuple[str, int]] = []

    class Fixed(Impl):
        def square(self, ctx: taskell.Context[None], x: int) -> int:
            ran.append((ctx.task_id, x))
            return x * x

    with taskell.Worker(registry(Fixed()), config):
        proc = taskell_cli("dead-letters", "--requeue", task_id)
        assert proc.returncode == 0, _explain(proc)
        assert proc.stdout.strip() == f"requeued {task_id} to queue taskell.q1", _explain(proc)
        wait_until(lambda: ran != [], RESULT_TIMEOUT, "the requeued task ran")
        time.sleep(0.5)  # a second run would have started by now
    assert ran == [(task_id, 3)]
    assert amqp.queue_declare("taskell.dead", passive=True).method.message_count == 0
