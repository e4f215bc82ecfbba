"""The control plane's bearer token: where a server finds it, and checking it in constant time.

Every state-changing route (the model server's reload and model repository, the traffic
split's ``POST /-/split``) needs ``Authorization: Bearer <token>``. A server reads its token
from the file named by ``$KFOPS_SERVING_TOKEN_FILE`` (a mounted Kubernetes secret) or else from
``$KFOPS_SERVING_TOKEN``. A server with no token refuses every control request: the control
plane is off, not open. Locally, :func:`kfops.serving.local.process.start_server` generates a
token per server and keeps it in the owner-only state file that kfops' own client reads.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kfops.errors import ConfigError
from kfops.serving.protocol.asgi import send_json

TOKEN_ENV = "KFOPS_SERVING_TOKEN"
TOKEN_FILE_ENV = "KFOPS_SERVING_TOKEN_FILE"
AUTH_HEADER = b"authorization"
_UNAUTHORIZED_HEADERS = ((b"www-authenticate", b'Bearer realm="kfops-control"'),)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_from_environment(environ: Mapping[str, str] | None = None) -> str | None:
    """The token from ``$KFOPS_SERVING_TOKEN_FILE`` (preferred) or ``$KFOPS_SERVING_TOKEN``; None when unset."""
    env = os.environ if environ is None else environ
    path = env.get(TOKEN_FILE_ENV)
    if path:
        try:
            token = Path(path).read_text().strip()
        except OSError as err:
            raise ConfigError(f"cannot read the control-plane token file {path} ({TOKEN_FILE_ENV}): {err}",
                              hint="mount the secret there, or unset the variable") from err
        if not token:
            raise ConfigError(f"the control-plane token file {path} ({TOKEN_FILE_ENV}) is empty")
        return token
    return env.get(TOKEN_ENV) or None


def bearer_headers(token: str | None) -> dict[str, str]:
    """The request headers a client sends to a control route."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def check(scope: dict[str, Any], token: str | None) -> str | None:
    """None when the request carries ``token``; else why it is refused (for a 401 body)."""
    if not token:
        return ("this server has no control-plane token, so its control routes are off; "
                f"start it with {TOKEN_FILE_ENV} or {TOKEN_ENV} set")
    given = b""
    for key, value in scope["headers"]:
        if key == AUTH_HEADER:
            given = value
            break
    scheme, _, credential = given.partition(b" ")
    if scheme.lower() != b"bearer" or not credential:
        return "this route needs Authorization: Bearer <token> (the server's control-plane token)"
    if not hmac.compare_digest(credential.strip(), token.encode()):
        return "the bearer token is not this server's control-plane token"
    return None


async def refuse(send: Any, why: str) -> None:
    """401 with a JSON body naming why."""
    await send_json(send, 401, {"error": why}, _UNAUTHORIZED_HEADERS)
