"""Model serving: a KServe ModelServer for kfops models, its local process, client and batch scoring.

Run it with ``kfops serve start`` (background, see :mod:`.process`) or in the foreground with
``python -m kfops.serving --model-dir DIR | --model-uri models:/name/version [--name NAME]``.
It binds 127.0.0.1 unless ``serving.host`` says otherwise; gRPC is off (KServe's gRPC server
would listen on every interface).

Endpoints (``<name>`` is ``registry.model_name`` unless ``--name`` is given):

- ``POST /v1/models/<name>:predict``  ``{"instances": [{...}, ...]}``
  -> ``{"predictions": [{"probability": p, "label": 0|1}], "model_name", "model_version"}``
- ``POST /v2/models/<name>/infer`` (Open Inference Protocol, one tensor per column)
  -> outputs ``probability`` (FP64) and ``label`` (INT64); also under ``/versions/<version>/``.
- Each row is either all of the model's features, or a raw flight (``carrier``, ``origin``,
  ``dest``, ``distance``, ``sched_dep`` local New York time, optional ``tailnum``, ``flight``):
  the server derives the request-time features and reads the rest from the online store.
- ``POST /v1/models/<name>/reload``: hot-swap (body ``{}``: the same source again, e.g. an alias
  that moved; ``{"model_dir": ...}``; ``{"model_uri": ..., "tracking_uri": ...}``). SIGHUP
  reloads every model from its source. In-flight requests finish on the old version.
- ``GET /v2/models/<name>`` (metadata with the served version), ``/v2/models/<name>/ready``,
  ``/v2/health/live``, ``/v2/health/ready``, ``/v1/models/<name>``, ``/metrics`` (Prometheus).
- Client mistakes get a 4xx and ``{"error": "..."}``: 400 invalid input, 404 unknown model or
  version, 413 body over ``serving.max_payload_bytes``, 422 an entity with no online features.

Every prediction is appended to the inference log under ``inference_log_dir``
(:func:`.inference_log.read_inference_logs` reads it back for the drift job).

Splitting into a KServe transformer + predictor: by default raw flights are completed
in-process, because a hop would double the HTTP cost of a request that is otherwise a few
hundred microseconds. ``serving.kserve.transformer: true`` deploys :mod:`.transformer` as the
InferenceService's transformer (the same completion code, :func:`.engine.complete_flights`) in
front of a predictor that takes feature vectors only (``--online-lookup none``).

Modules (import what you need; nothing heavy is imported here):

- ``payloads``, ``encoding``, ``batching``, ``engine``: request validation, the hot-path encoder,
  adaptive batching and the serving core; no HTTP, no KServe.
- ``model`` (:class:`KfopsModel`), ``front``, ``server``, ``__main__``: the KServe adapter and the
  ``python -m kfops.serving`` entry point (these import kserve).
- ``transformer``: the raw-flight transformer; ``rollout``, ``canary``, ``split``: canary analysis,
  the local canary and its traffic split; ``log_sink``: KServe logger CloudEvents to the log store.
- ``process``: start/stop/status of a detached local server; ``client``: V2 requests and the
  deploy smoke test; ``batch``: file-to-file scoring; ``inference_log``: the prediction log;
  ``lookup``: online feature lookups (Feast, parquet tables); ``loading``: model sources.
"""
