"""The dashboard's web app: the page, its server-sent events, and the abort endpoint."""

from __future__ import annotations

import asyncio
import base64
import hmac
import ipaddress
from collections.abc import AsyncIterator
from importlib.resources import files

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from .poller import Poller

TOKEN_ENV = "TASKELL_DASHBOARD_TOKEN"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _asset(name: str) -> bytes:
    return files("taskell.dashboard").joinpath("static", name).read_bytes()


def create_app(poller: Poller, *, token: str | None = None) -> Starlette:
    """The app over ``poller``'s snapshots; with ``token`` every request must carry it
    (header ``Authorization: Bearer TOKEN``, basic auth with TOKEN as password, or ``?token=``)."""

    def allowed(request: Request) -> bool:
        if token is None:
            return True
        given = request.query_params.get("token", "")
        auth = request.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            given = auth[7:]
        elif auth.startswith("Basic "):
            try:
                given = base64.b64decode(auth[6:]).decode().partition(":")[2]
            except ValueError:
                given = ""
        return hmac.compare_digest(given.encode(), token.encode())

    def denied() -> Response:
        return Response("token required\n", 401, headers={"WWW-Authenticate": 'Basic realm="taskell"'})

    async def page(request: Request) -> Response:
        if not allowed(request):
            return denied()
        return Response(_asset("index.html"), media_type="text/html; charset=utf-8")

    async def script(request: Request) -> Response:
        return Response(_asset("dashboard.js"), media_type="text/javascript")

    async def style(request: Request) -> Response:
        return Response(_asset("dashboard.css"), media_type="text/css")

    async def state(request: Request) -> Response:
        if not allowed(request):
            return denied()
        return Response(poller.snapshot, media_type="application/json")

    async def events(request: Request) -> Response:
        if not allowed(request):
            return denied()

        async def stream() -> AsyncIterator[str]:
            version = -1
            while not await request.is_disconnected():
                if poller.version != version:
                    version = poller.version
                    yield f"data: {poller.snapshot}\n\n"
                else:
                    version = await asyncio.to_thread(poller.wait_change, version, 5.0)
                    if version == poller.version and poller.snapshot:
                        yield f"data: {poller.snapshot}\n\n"

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    async def abort(request: Request) -> Response:
        if not allowed(request):
            return denied()
        task_id = request.path_params["task_id"]
        await asyncio.to_thread(poller.abort, task_id)
        return Response(status_code=204)

    return Starlette(
        routes=[
            Route("/", page),
            Route("/dashboard.js", script),
            Route("/dashboard.css", style),
            Route("/state", state),
            Route("/events", events),
            Route("/abort/{task_id}", abort, methods=["POST"]),
        ]
    )
