"""A local traffic split: one address in front of a stable and a canary model server.

It plays the part of KServe's revision routing for the local canary (:mod:`.canary`). Requests
go to the canary in the configured share, spread evenly (request i goes to the canary when
``floor((i+1)p/100) > floor(ip/100)``), so small samples already get the exact share. Each
response carries ``x-kfops-backend: stable|canary``.

``GET /-/split`` returns the share and per-backend counts; ``POST /-/split {"canary_percent": N}``
changes the share at once (0 is the rollback) and needs the control-plane bearer token
(:mod:`kfops.serving.protocol.auth`; ``$KFOPS_SERVING_TOKEN_FILE`` or ``$KFOPS_SERVING_TOKEN``),
else 401. A backend that cannot be reached is a 502.

Bodies stream through in both directions: the split holds one chunk at a time, never a whole
request or response. A client that leaves mid-body aborts the backend request, so a backend never
sees half a body as a complete request.

    python -m kfops.serving.sidecars.split --port 8090 --stable http://127.0.0.1:8080 \\
        --canary http://127.0.0.1:8081 --canary-percent 10
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from kfops.serving.protocol import auth
from kfops.serving.protocol.asgi import (
    ClientGone,
    backend_client,
    header,
    lifespan,
    read_body,
    send_json,
)
from kfops.serving.protocol.payloads import PayloadTooLarge, RequestError
from kfops.serving.protocol.timeouts import read_timeout_protocol

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 100_000_000  # streamed, not held; the servers behind enforce their own, smaller limit
CONTROL_BODY_BYTES = 4096
CONTROL_PATH = "/-/split"
BACKEND_HEADER = b"x-kfops-backend"
_HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"host",
               b"content-length", b"proxy-authorization", b"proxy-authenticate"}


class TrafficSplit:
    def __init__(self, stable_url: str, canary_url: str, canary_percent: int, token: str | None = None):
        self.token = token
        self.urls = {"stable": stable_url.rstrip("/"), "canary": canary_url.rstrip("/")}
        self.canary_percent = _percent(canary_percent)
        self.sent = 0
        self.counts: dict[str, dict[str, int]] = {"stable": {}, "canary": {}}
        self._client: Any = None

    def choose(self) -> str:
        i, p = self.sent, self.canary_percent
        self.sent += 1
        return "canary" if ((i + 1) * p) // 100 > (i * p) // 100 else "stable"

    def state(self) -> dict[str, Any]:
        return {"canary_percent": self.canary_percent, "backends": self.urls, "responses": self.counts}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send, self._startup, self._shutdown)
            return
        if scope["type"] != "http":
            return
        if scope["path"] == CONTROL_PATH:
            await self._control(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            await _respond(send, 413, {"error": f"request body over {MAX_BODY_BYTES} bytes"})
            return
        backend = self.choose()
        url = self.urls[backend] + scope["path"] + (f"?{scope['query_string'].decode()}" if scope["query_string"] else "")
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP_BY_HOP]
        if declared is not None:  # keep it: the backend refuses an oversize body before reading it
            headers.append((b"content-length", declared.encode()))
        import httpx

        request = self._client.build_request(scope["method"], url, headers=headers,
                                             content=_request_chunks(receive, MAX_BODY_BYTES))
        try:
            response = await self._client.send(request, stream=True)
        except ClientGone:  # the client left mid-body: the backend request was aborted with it
            return
        except PayloadTooLarge:
            await _respond(send, 413, {"error": f"request body over {MAX_BODY_BYTES} bytes"}, backend)
            return
        except httpx.HTTPError as err:
            self._count(backend, 502)
            await _respond(send, 502, {"error": f"the {backend} server at {self.urls[backend]} is unreachable: "
                                                f"{type(err).__name__}"}, backend)
            return
        try:
            self._count(backend, response.status_code)
            out = [(k.encode(), v.encode()) for k, v in response.headers.items() if k.encode() not in _HOP_BY_HOP]
            out.append((BACKEND_HEADER, backend.encode()))
            length = response.headers.get("content-length")
            if length is not None:
                out.append((b"content-length", length.encode()))
            await send({"type": "http.response.start", "status": response.status_code, "headers": out})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except httpx.HTTPError as err:  # the backend died mid-response: nothing more can be said
            log.warning("the %s server broke off a response: %s", backend, type(err).__name__)
        finally:
            await response.aclose()

    def _count(self, backend: str, status: int) -> None:
        codes = self.counts[backend]
        codes[str(status)] = codes.get(str(status), 0) + 1

    async def _control(self, scope: dict, receive: Any, send: Any) -> None:
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            why = auth.check(scope, self.token)
            if why is not None:
                await auth.refuse(send, why)
                return
        try:
            body = await read_body(scope, receive, CONTROL_BODY_BYTES)
        except ClientGone:
            return
        except RequestError as err:
            await _respond(send, err.status, {"error": err.message})
            return
        if method == "POST":
            try:
                self.canary_percent = _percent(json.loads(body or b"{}")["canary_percent"])
            except (ValueError, KeyError, TypeError) as err:
                await _respond(send, 400, {"error": f'send {{"canary_percent": 0..100}}: {err}'})
                return
            log.info("canary share set to %d%%", self.canary_percent)
        await _respond(send, 200, self.state())

    async def _startup(self) -> None:
        self._client = backend_client()

    async def _shutdown(self) -> None:
        await self._client.aclose()


async def _request_chunks(receive: Any, limit: int) -> Any:
    """The request body as it arrives; ClientGone when the client leaves, PayloadTooLarge past ``limit``."""
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"request body over {limit} bytes")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def _percent(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        raise ValueError(f"canary_percent must be a number from 0 to 100, got {value!r}")
    return int(value)


async def _respond(send: Any, status: int, payload: Any, backend: str | None = None) -> None:
    await send_json(send, status, payload, [(BACKEND_HEADER, backend.encode())] if backend else ())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kfops.serving.sidecars.split", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--stable", required=True, help="URL of the stable server")
    p.add_argument("--canary", required=True, help="URL of the canary server")
    p.add_argument("--canary-percent", type=int, default=10)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    import uvicorn

    from kfops.errors import ConfigError

    try:
        app = TrafficSplit(args.stable, args.canary, args.canary_percent, token=auth.token_from_environment())
    except (ValueError, ConfigError) as err:
        print(f"kfops.serving.sidecars.split: error: {err}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, lifespan="on",
                http=read_timeout_protocol())
    return 0


if __name__ == "__main__":
    sys.exit(main())
