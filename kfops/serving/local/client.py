"""A small client for the model server: V2 requests from row dicts, and the deploy smoke test."""

from __future__ import annotations

import math
from typing import Any

from kfops.errors import ServingError


def _http(url: str, timeout_s: float):
    import httpx

    local = url.startswith(("http://127.", "http://localhost", "http://[::1]"))
    return httpx.Client(timeout=timeout_s, trust_env=not local)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # pandas' NaN means missing; JSON has no NaN
    if hasattr(value, "item"):  # numpy scalars
        return _clean(value.item())
    return value


def _datatype(values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if any(isinstance(v, str) for v in present):
        return "BYTES"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "INT64"
    return "FP64"


def v2_request(rows: list[dict[str, Any]], datatypes: dict[str, str] | None = None,
               request_id: str | None = None) -> dict[str, Any]:
    """Rows of field -> value as a V2 request: one tensor per field, typed from ``datatypes``
    (e.g. the server's model metadata) or guessed from the values."""
    if not rows:
        raise ServingError("no rows to send")
    names = list(rows[0])
    inputs = []
    for name in names:
        data = [_clean(row.get(name)) for row in rows]
        datatype = (datatypes or {}).get(name) or _datatype(data)
        inputs.append({"name": name, "datatype": datatype, "shape": [len(rows)], "data": data})
    return {"inputs": inputs} if request_id is None else {"id": request_id, "inputs": inputs}


def model_metadata(url: str, model_name: str, timeout_s: float = 10.0) -> dict[str, Any]:
    import httpx

    try:
        with _http(url, timeout_s) as http:
            response = http.get(f"{url.rstrip('/')}/v2/models/{model_name}")
    except httpx.HTTPError as err:
        raise ServingError(f"the model server at {url} did not answer: {err}") from err
    if response.status_code != 200:
        raise ServingError(f"no model '{model_name}' at {url}: HTTP {response.status_code}")
    return response.json()


def infer(url: str, model_name: str, rows: list[dict[str, Any]], timeout_s: float = 30.0,
          request_id: str | None = None) -> dict[str, Any]:
    """Send ``rows`` as one V2 request; returns the response; raises ServingError on any non-200."""
    import httpx

    meta = model_metadata(url, model_name, timeout_s)
    datatypes = {t["name"]: t["datatype"] for t in meta.get("inputs", [])}
    body = v2_request(rows, datatypes, request_id)
    try:
        with _http(url, timeout_s) as http:
            response = http.post(f"{url.rstrip('/')}/v2/models/{model_name}/infer", json=body)
    except httpx.HTTPError as err:
        raise ServingError(f"the model server at {url} did not answer: {err}") from err
    if response.status_code != 200:
        try:
            detail = response.json().get("error", response.text)
        except ValueError:
            detail = response.text
        raise ServingError(f"{url} answered HTTP {response.status_code}: {detail}")
    return response.json()


def smoke_test(url: str, model_name: str, rows: list[dict[str, Any]], timeout_s: float = 30.0) -> dict[str, Any]:
    """One V2 request with ``rows``; checks one probability in [0, 1] per row; returns the response.

    Its request id marks it as a deploy check, which the inference log keeps apart from traffic."""
    import uuid

    from kfops.serving.runtime.inference_log import DEPLOY_CHECK_ID_PREFIX

    response = infer(url, model_name, rows, timeout_s, request_id=f"{DEPLOY_CHECK_ID_PREFIX}{uuid.uuid4().hex}")
    outputs = {o.get("name"): o for o in response.get("outputs", [])}
    probabilities = outputs.get("probability", {}).get("data")
    if not isinstance(probabilities, list) or len(probabilities) != len(rows):
        raise ServingError(f"smoke test of {url}: expected {len(rows)} probabilities, got {probabilities!r}")
    if not all(isinstance(p, (int, float)) and 0.0 <= p <= 1.0 for p in probabilities):
        raise ServingError(f"smoke test of {url}: probabilities outside [0, 1]: {probabilities}")
    return response
