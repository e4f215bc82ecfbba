"""A KServe transformer for raw requests, for clusters that split it from the predictor.

By default the model server completes raw requests in-process (:mod:`kfops.serving.runtime.engine`): a network hop
would cost more than the model. When a team wants the feature lookup in its own container
(``serving.kserve.transformer: true``: its own scaling, its own credentials for the online
store), this process sits in front of a predictor started with ``--online-lookup none``:

* a raw request (V1 or V2; its fields from ``dataset.request_builder``, else the feature views'
  join keys plus the model features no view provides) is validated, batched with its
  neighbours, completed with the request-time features and the online store's
  (:func:`kfops.serving.runtime.engine.complete_raw`, the same code as in-process), and
  forwarded as a feature vector in the same protocol;
* a feature-vector request is validated and forwarded as it came;
* the predictor's answer (and its 4xx) goes back as it is; an unreachable predictor is a 502;
* a failing online store is a 503, a request past ``request_timeout_s`` a 504, each logged at most
  once per interval; a body that is not JSON is a 415.

It binds 127.0.0.1 unless told otherwise; the rendered InferenceService passes ``--host 0.0.0.0``.

It learns the model's feature columns from the predictor's V2 metadata at start, and is ready
once it has them.

    python -m kfops.serving.kserve.transformer --model-name my-model --predictor-host my-model-predictor

KServe passes ``--model_name``, ``--predictor_host`` and ``--http_port`` to a transformer
container; both spellings are accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import orjson

from kfops.errors import KfopsError
from kfops.serving.protocol.asgi import (
    ClientGone,
    backend_client,
    header,
    lifespan,
    read_body,
    send_bytes,
    send_json,
)
from kfops.serving.protocol.payloads import (
    FEATURES,
    DependencyUnavailable,
    RequestError,
    check_json_content_type,
    decode_v1,
    decode_v2,
    error_body,
    parse_json,
)

if TYPE_CHECKING:
    from kfops.core.model import FeatureSpec
    from kfops.core.requests import RawSchema, RequestSpec
    from kfops.serving.runtime.lookup import OnlineLookup

log = logging.getLogger(__name__)
METADATA_TIMEOUT_S = 300.0
_INFER = re.compile(r"^/(?:v1/models/(?P<v1>[^/:]+):predict|v2/models/(?P<v2>[^/]+)/infer)$")


class RawRequestTransformer:
    """ASGI app: validate, complete raw requests, forward to the predictor."""

    def __init__(self, name: str, predictor_url: str, lookup: OnlineLookup, *, max_batch_size: int = 256,
                 max_latency_ms: float = 2.0, max_payload_bytes: int = 1_000_000,
                 builder: RequestSpec = None, request_timeout_s: float | None = None):
        from kfops.serving.runtime.batching import AdaptiveBatcher
        from kfops.serving.runtime.ratelog import RateLimitedLog

        self.name = name
        self.predictor_url = predictor_url.rstrip("/")
        self.lookup = lookup
        self.builder = builder
        self.raw: RawSchema | None = None
        self.max_payload_bytes = max_payload_bytes
        self.request_timeout_s = request_timeout_s
        self.failures = RateLimitedLog(log)
        self.spec: FeatureSpec | None = None
        self._client: Any = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kfops-transform")
        self._batcher = AdaptiveBatcher(self._complete, max_batch_size=max_batch_size,
                                        max_latency_s=max_latency_ms / 1000, executor=self._pool)

    # -- the work -------------------------------------------------------------------------------

    def _complete(self, requests: list) -> list[Any]:
        from kfops.serving.runtime.engine import complete_raw

        completed = complete_raw(requests, self.spec, self._raw_schema(), self.lookup)
        results: list[Any] = []
        for (start, stop), problem in zip(completed.slices, completed.problems, strict=True):
            results.append(problem if problem is not None else
                           {c: [_json_value(v) for v in values[start:stop]] for c, values in completed.columns.items()})
        return results

    async def handle(self, path: str, body: bytes) -> tuple[int, bytes]:
        match = _INFER.match(path)
        name = match["v1"] or match["v2"]
        if name != self.name:
            return 404, orjson.dumps(error_body(f"model '{name}' is not served here; this serves '{self.name}'"))
        payload = parse_json(body)
        raw = self.raw if self.raw is not None else self._raw_schema
        parsed = decode_v1(payload, self.spec, raw) if match["v1"] else decode_v2(payload, self.spec, raw)
        if parsed.kind == FEATURES:
            forward = body
        else:
            features = await self._batcher.submit(parsed, parsed.rows)
            forward = orjson.dumps(_feature_request(parsed, features, self.spec, v1=bool(match["v1"])))
        return await self._predict(path, forward)

    def _raw_schema(self) -> RawSchema | None:
        if self.raw is None:
            from kfops.serving.runtime.engine import raw_schema_for

            self.raw = raw_schema_for(self.spec, self.builder, self.lookup)
        return self.raw

    async def _predict(self, path: str, body: bytes) -> tuple[int, bytes]:
        import httpx

        try:
            response = await self._client.post(self.predictor_url + path, content=body,
                                                headers={"content-type": "application/json"})
        except httpx.HTTPError as err:
            return 502, orjson.dumps(error_body(f"the predictor at {self.predictor_url} is unreachable: "
                                                f"{type(err).__name__}"))
        return response.status_code, response.content

    async def load_spec(self, timeout_s: float = METADATA_TIMEOUT_S) -> FeatureSpec:
        """The model's columns from the predictor's V2 metadata (waits for the predictor to be up)."""
        import httpx

        from kfops.core.model import FeatureSpec

        deadline = asyncio.get_running_loop().time() + timeout_s
        url = f"{self.predictor_url}/v2/models/{self.name}"
        while True:
            try:
                response = await self._client.get(url)
                if response.status_code == 200:
                    inputs = response.json()["inputs"]
                    break
                problem = f"HTTP {response.status_code}"
            except (httpx.HTTPError, ValueError, KeyError) as err:
                problem = f"{type(err).__name__}: {err}"
            if asyncio.get_running_loop().time() >= deadline:
                raise KfopsError(f"no model metadata from {url} within {timeout_s:g}s ({problem})")
            await asyncio.sleep(0.5)
        self.spec = FeatureSpec(columns=[i["name"] for i in inputs],
                                categorical={i["name"]: [] for i in inputs if i["datatype"] == "BYTES"})
        self.raw = None
        log.info("transforming raw requests for %s: %d features from %s", self.name, len(inputs), url)
        return self.spec

    # -- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send, self._startup, self._shutdown)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if method == "GET":
            await self._get(path, send)
            return
        if method != "POST" or not _INFER.match(path):
            await send_json(send, 404, error_body(f"no route {method} {path}"))
            return
        if self.spec is None:
            await send_json(send, 503, error_body("not ready: the predictor's model metadata is not loaded yet"))
            return
        try:
            check_json_content_type(header(scope, b"content-type"))
            body = await read_body(scope, receive, self.max_payload_bytes)
            async with asyncio.timeout(self.request_timeout_s):
                status, content = await self.handle(path, body)
        except DependencyUnavailable as err:
            self.failures.warning("dependency", f"transformer {self.name}: 503: {err.message}")
            await send_json(send, err.status, error_body(err.message))
            return
        except RequestError as err:
            await send_json(send, err.status, error_body(err.message))
            return
        except ClientGone:  # nobody to answer
            return
        except TimeoutError:
            message = f"no answer within {self.request_timeout_s:g}s (serving.request_timeout_s)"
            self.failures.warning("timeout", f"transformer {self.name}: 504: {message}")
            await send_json(send, 504, error_body(message))
            return
        except KfopsError as err:
            self.failures.warning(f"server:{type(err).__name__}", f"transformer {self.name}: {err}")
            await send_json(send, 500, error_body(str(err)))
            return
        except Exception as err:  # the request boundary: answer, log (rarely), keep serving
            self.failures.warning(f"internal:{type(err).__name__}",
                                  f"transformer {self.name}: unexpected {type(err).__name__}: {err}")
            await send_json(send, 500, error_body(f"internal error: {type(err).__name__}: {err}"))
            return
        await send_bytes(send, status, content)

    async def _get(self, path: str, send: Any) -> None:
        if path == "/v2/health/live":
            await send_json(send, 200, {"live": True})
        elif path in ("/v2/health/ready", f"/v2/models/{self.name}/ready"):
            ready = self.spec is not None
            await send_json(send, 200 if ready else 503, {"name": self.name, "ready": ready})
        elif path in (f"/v2/models/{self.name}", f"/v1/models/{self.name}"):
            response = await self._client.get(self.predictor_url + path)
            await send_bytes(send, response.status_code, response.content)
        else:
            await send_json(send, 404, error_body(f"no route GET {path}"))

    async def _startup(self) -> None:
        self._client = backend_client()
        self._spec_task = asyncio.get_running_loop().create_task(self.load_spec())

    async def _shutdown(self) -> None:
        self._spec_task.cancel()
        await self._client.aclose()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and value != value:  # NaN: JSON has null
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def _feature_request(parsed: Any, features: dict[str, list], spec: FeatureSpec, *, v1: bool) -> dict[str, Any]:
    if v1:
        names = list(features)
        return {"instances": [dict(zip(names, row, strict=True)) for row in zip(*features.values(), strict=True)]}
    body: dict[str, Any] = {"inputs": [
        {"name": c, "datatype": "BYTES" if c in spec.categorical else "FP64", "shape": [parsed.rows], "data": values}
        for c, values in features.items()]}
    if parsed.request_id is not None:
        body["id"] = parsed.request_id
    body["outputs"] = [{"name": n} for n in parsed.outputs]
    return body


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kfops.serving.kserve.transformer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--model-name", "--model_name", dest="model_name", required=True)
    p.add_argument("--predictor-host", "--predictor_host", dest="predictor_host", required=True,
                   help="host[:port] or URL of the predictor")
    p.add_argument("--host", default="127.0.0.1", help="bind address (the InferenceService passes 0.0.0.0)")
    p.add_argument("--http-port", "--http_port", dest="http_port", type=int, default=8080)
    p.add_argument("--online-lookup", default="feast", help="feast (default) or parquet:DIR")
    p.add_argument("--online-as-of", choices=["event", "now", "none"], default="event")
    p.add_argument("--config", help="kfops.yaml (default: $KFOPS_CONFIG_JSON, else the nearest kfops.yaml)")
    args, _unknown = p.parse_known_args(argv)  # KServe may add flags of its own
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    try:
        import os
        from pathlib import Path

        from kfops.config import CONFIG_JSON_ENV, load_config, load_config_json
        from kfops.core.requests import load_request_builder
        from kfops.serving.runtime.lookup import build_lookup

        if os.environ.get(CONFIG_JSON_ENV) and args.config is None:  # secrets come from KFOPS__ variables
            cfg = load_config_json(os.environ[CONFIG_JSON_ENV])
        else:
            cfg = load_config(Path(args.config) if args.config else None)
        lookup = build_lookup(args.online_lookup, cfg, args.online_as_of)
        if lookup is None:
            raise KfopsError("a transformer needs an online lookup (feast or parquet:DIR), not none")
        warm = getattr(lookup, "warm", None)
        if warm is not None:
            warm()
        url = args.predictor_host if "://" in args.predictor_host else f"http://{args.predictor_host}"
        app = RawRequestTransformer(args.model_name, url, lookup, max_batch_size=cfg.serving.max_batch_size,
                                    builder=load_request_builder(cfg.dataset.request_builder, cfg.resolved_against,
                                                                 cfg.dataset.request_time_field),
                                    max_latency_ms=cfg.serving.max_latency_ms,
                                    max_payload_bytes=cfg.serving.max_payload_bytes,
                                    request_timeout_s=cfg.serving.request_timeout_s)
    except KfopsError as err:
        print(f"kfops.serving.kserve.transformer: error: {err}", file=sys.stderr)
        return err.exit_code
    import uvicorn

    from kfops.serving.protocol.timeouts import read_timeout_protocol

    uvicorn.run(app, host=args.host, port=args.http_port, log_level="warning", access_log=False, lifespan="on",
                http=read_timeout_protocol())
    return 0


if __name__ == "__main__":
    sys.exit(main())
