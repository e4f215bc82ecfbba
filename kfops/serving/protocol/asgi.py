"""The ASGI plumbing every kfops server shares: the model server's front, the transformer, the
traffic split and the log sink. One body reader (with its size limit) and one JSON response, so
the servers cannot drift apart on either.

``read_body`` and ``send_json`` are on the model server's hot path: keep them free of per-request
work beyond what they do now.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from kfops.serving.protocol.payloads import PayloadTooLarge, RequestError, UnsupportedMediaType

JSON_CONTENT_TYPE = (b"content-type", b"application/json")


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


def header(scope: dict, name: bytes) -> str | None:
    """The first value of header ``name`` (lower-case bytes, as ASGI gives them), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def read_body(scope: dict, receive: Any, limit: int) -> bytes:
    """The whole request body.

    Raises :class:`PayloadTooLarge` (413) as soon as the declared or received size passes
    ``limit`` (the rest is not read), :class:`RequestError` for a Content-Length that is not a
    number, and :class:`ClientGone` when the client disconnects first (answer nothing then).
    A gzip or deflate body (``Content-Encoding``) is inflated, to at most ``limit`` bytes; another
    encoding is 415.
    """
    declared = encoding = None
    for key, value in scope["headers"]:
        if key == b"content-length" and declared is None:
            declared = value.decode("latin-1")
        elif key == b"content-encoding" and encoding is None:
            encoding = value.decode("latin-1").strip().lower()
    if declared is not None:
        try:
            size = int(declared)
        except ValueError as err:
            raise RequestError(f"Content-Length {declared!r} is not a number") from err
        if size > limit:
            raise PayloadTooLarge(f"request body of {size} bytes exceeds the limit of {limit} bytes "
                                  "(serving.max_payload_bytes); send fewer rows per request")
    chunks = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes (serving.max_payload_bytes); "
                                  "send fewer rows per request")
        chunks.append(chunk)
        if not message.get("more_body", False):
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            return body if encoding is None or encoding == "identity" else _decoded(body, encoding, limit)


def _decoded(body: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate body, inflated to at most ``limit`` bytes (a small bomb cannot fill memory)."""
    import zlib

    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or none")
    # wbits: gzip header for gzip, zlib header for deflate (RFC 9110 says deflate is zlib-wrapped).
    inflater = zlib.decompressobj(wbits=31 if encoding != "deflate" else 15)
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error as err:
        raise RequestError(f"the request body is not valid {encoding} ({err})") from None
    if len(inflated) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"the request body inflates past the limit of {limit} bytes "
                              "(serving.max_payload_bytes); send fewer rows per request")
    if not inflater.eof:
        raise RequestError(f"the request body is truncated {encoding}")
    return inflated


async def send_bytes(send: Any, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """A response whose body is JSON already encoded (e.g. passed through from a backend)."""
    await send({"type": "http.response.start", "status": status,
                "headers": [JSON_CONTENT_TYPE, *headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Any, status: int, payload: Any, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """``payload`` as a JSON response, with ``headers`` after the content type."""
    body = orjson.dumps(payload)
    # Not via send_bytes: one coroutine less per response on the hot path.
    await send({"type": "http.response.start", "status": status,
                "headers": [JSON_CONTENT_TYPE, *headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


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
