"""Small ASGI pieces shared by kfops' helper servers: the traffic split, the transformer and the
log sink (the model server itself runs inside KServe's app, see :mod:`.front`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson


async def read_all(receive: Any, limit: int) -> tuple[bytes, bool]:
    """The request body, and whether it was over ``limit`` bytes (then cut off, not kept)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks), size > limit


async def respond(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    out = [(b"content-type", b"application/json"), *(headers or []), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body})


async def respond_json(send: Any, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await respond(send, status, orjson.dumps(payload), headers)


def backend_client() -> Any:
    """A pooled client for the servers behind this one (loopback or in-cluster: never a proxy)."""
    import httpx

    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    return httpx.AsyncClient(timeout=30, limits=limits, trust_env=False)


async def lifespan(receive: Any, send: Any, startup: Callable[[], Awaitable[None]],
                   shutdown: Callable[[], Awaitable[None]]) -> None:
    """Run the ASGI lifespan protocol around ``startup`` and ``shutdown``."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await startup()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
