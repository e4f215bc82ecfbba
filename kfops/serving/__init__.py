"""Model serving: a KServe ModelServer for kfops models, its sidecars, and its local process.

Run it with ``kfops serve start`` (background, see :mod:`.local.process`) or in the foreground
with ``python -m kfops.serving --model-dir DIR | --model-uri models:/name/version [--name NAME]``.
It binds 127.0.0.1 unless ``serving.host`` says otherwise; gRPC is off (KServe's gRPC server
would listen on every interface).

Endpoints (``<name>`` is ``registry.model_name`` unless ``--name`` is given):

- ``POST /v1/models/<name>:predict``  ``{"instances": [{...}, ...]}``
  -> ``{"predictions": [{"probability": p, "label": 0|1}], "model_name", "model_version"}``
- ``POST /v2/models/<name>/infer`` (Open Inference Protocol, one tensor per column)
  -> outputs ``probability`` (FP64) and ``label`` (INT64); also under ``/versions/<version>/``.
- Each row is either all of the model's features, or a raw request: the dataset's entity keys
  plus its request-time inputs, as ``dataset.request_builder`` declares them (by default the
  feature views' join keys plus the model features no view provides, and an optional event
  time, ``dataset.request_time_field``); the server derives the request-time features and reads the rest from the
  online store (see :mod:`kfops.core.requests`).
- ``POST /v1/models/<name>/reload`` (needs ``Authorization: Bearer <token>``, see
  :mod:`.protocol.auth`): hot-swap (body ``{}``: the same source again, e.g. an alias that moved;
  ``{"model_version": "7"}`` or ``{"model_uri": "models:/<name>/7"}`` of the served model from the
  server's own registry; ``{"model_dir": ...}`` under ``serving.reload_roots``). SIGHUP reloads
  every model from its source. Requests in progress finish on the old version.
- ``GET /v2/models/<name>`` (metadata with the served version), ``/v2/models/<name>/ready``,
  ``/v2/health/live``, ``/v2/health/ready``, ``/v1/models/<name>``, ``/metrics`` (Prometheus).
- Client mistakes get a 4xx and ``{"error": "..."}``: 400 invalid input, 401 a control route
  without the token, 403 a reload the server does not allow, 404 unknown model or version, 413
  body over ``serving.max_payload_bytes``, 415 a body that is not JSON, 422 an entity with no
  online features. A failing online store is a 503, a request past ``serving.request_timeout_s`` a 504.

Subpackages (import what you need; nothing heavy is imported here):

- ``protocol``: request decoding and validation, response encoding, the hot-path encoder, the
  shared ASGI helpers (body size limit, JSON responses, lifespan).
- ``runtime``: the engine, batching, model loading, online lookups, metrics, the inference log.
- ``kserve``: the predictor, the ASGI front, the ModelServer and the transformer (import kserve).
- ``sidecars``: the KServe logger's CloudEvent sink and the local traffic split.
- ``local``: the detached local process, the local canary, the client, batch scoring.

The canary decision itself is pure and shared with the cluster: :mod:`kfops.core.rollout`.
"""
