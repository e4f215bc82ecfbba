"""``python -m kfops.serving``: parse arguments, then start the model server (see server.py).

    python -m kfops.serving --model-dir runs/model --name my-model --http-port 8080
    python -m kfops.serving --model-uri models:/my-model@champion --tracking-uri sqlite:///mlflow.db

Settings default to the ``serving`` section of the kfops config (``--config`` or
``--config-json``, else ``$KFOPS_CONFIG_JSON``, else the nearest kfops.yaml); flags override them. Exit code 2 means the
arguments or the model are wrong, with the reason on stderr.

The control routes (reload, the model repository) need the bearer token in
``$KFOPS_SERVING_TOKEN_FILE`` or ``$KFOPS_SERVING_TOKEN``; without one they are refused (401).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from kfops.errors import KfopsError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kfops.serving", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", type=Path, help="a kfops model folder (kfops_model.json + weights)")
    source.add_argument("--model-uri", help="models:/<name>/<version> or models:/<name>@<alias>")
    p.add_argument("--tracking-uri", help="MLflow tracking URI for --model-uri (default: the config's)")
    p.add_argument("--name", help="model name in the URL paths (default: registry.model_name)")
    p.add_argument("--host", help="bind address (default: serving.host, 127.0.0.1)")
    p.add_argument("--http-port", type=int, help="HTTP port (default: serving.http_port)")
    p.add_argument("--config", type=Path, help="kfops.yaml to read")
    p.add_argument("--config-json", type=Path, help="a resolved KfopsConfig as JSON (written by start_server)")
    p.add_argument("--max-batch-size", type=int, help="rows per model call (default: serving.max_batch_size)")
    p.add_argument("--max-latency-ms", type=float, help="batching window cap (default: serving.max_latency_ms)")
    p.add_argument("--max-payload-bytes", type=int, help="request body limit (default: serving.max_payload_bytes)")
    p.add_argument("--inference-log-dir", type=Path, help="where predictions are logged (default: under data_dir)")
    p.add_argument("--inference-log-flush-s", type=float, help="seconds between inference log files (default 10)")
    p.add_argument("--no-inference-log", action="store_true", help="do not log predictions")
    p.add_argument("--online-lookup", default="feast",
                   help="online features for raw requests: feast (default), parquet:DIR or none")
    p.add_argument("--online-as-of", choices=["event", "now", "none"], default="event",
                   help="feature TTLs count back from the request's event time (default), now, or not at all")
    p.add_argument("--no-fast-path", action="store_true", help="send inference through KServe's own routes")
    p.add_argument("--access-log", action="store_true", help="log one line per request")
    p.add_argument("--workers", type=int, help="server processes on the port, each with its own event loop and "
                   "model (default: serving.workers, 1)")
    p.add_argument("--predict-threads", type=int, default=1, help="threads per model call (default 1)")
    p.add_argument("--request-timeout-s", type=float, help="inference deadline, 504 past it "
                   "(default: serving.request_timeout_s)")
    p.add_argument("--read-timeout-s", type=float, help="a request's head and body must arrive within this "
                   "(default 15); slower clients are disconnected")
    p.add_argument("--reload-root", type=Path, action="append", dest="reload_roots",
                   help="a folder a model_dir reload may load from (repeatable; default: serving.reload_roots)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # KServe parses sys.argv when imported; ours are not its flags.
    sys.argv = sys.argv[:1]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    from kfops.core.redaction import install_log_redaction

    install_log_redaction()  # a failed reload's traceback quotes the tracking URI, password and all
    try:
        from kfops.config import CONFIG_JSON_ENV, PROJECT_DIR_ENV, KfopsConfig, load_config, load_config_json
        from kfops.serving.runtime.loading import ModelSource

        # Neither JSON carries a secret: the file's come back from the KFOPS__ variables its
        # starter put in our environment; an InferenceService's from its Kubernetes Secret, with
        # any other KFOPS__ override of the pod.
        if args.config_json is not None:
            cfg = KfopsConfig.from_json(args.config_json.read_text()).with_secrets()
            if os.environ.get(PROJECT_DIR_ENV):  # start_server's: the project's plug-ins import from there
                cfg = cfg.resolve(Path(os.environ[PROJECT_DIR_ENV]))
        elif os.environ.get(CONFIG_JSON_ENV) and args.config is None:  # an InferenceService's container
            cfg = load_config_json(os.environ[CONFIG_JSON_ENV])
        else:
            cfg = load_config(args.config)
        from kfops.adapters.mlflow_registry import HttpBounds

        # Every registry call of this process (start, reload, an alias's version) gives up within
        # registry.http_* instead of MLflow's minutes of retries; values the operator set stand.
        for name, value in HttpBounds.of(cfg).environment().items():
            os.environ.setdefault(name, value)
        tracking_uri = cfg.with_credentials(args.tracking_uri) or (cfg.tracking_uri if args.model_uri else None)
        source = ModelSource(model_dir=args.model_dir, model_uri=args.model_uri, tracking_uri=tracking_uri)
        from kfops.serving.kserve.server import options_from_config, serve

        options = options_from_config(
            cfg, args.name or cfg.registry.model_name, source, host=args.host, http_port=args.http_port,
            max_batch_size=args.max_batch_size, max_latency_ms=args.max_latency_ms,
            max_payload_bytes=args.max_payload_bytes, inference_log_dir=args.inference_log_dir,
            inference_log_flush_s=args.inference_log_flush_s,
            online_lookup=args.online_lookup, online_as_of=args.online_as_of, fast_path=not args.no_fast_path,
            access_log=args.access_log,
            predict_threads=args.predict_threads, request_timeout_s=args.request_timeout_s,
            reload_roots=args.reload_roots, read_timeout_s=args.read_timeout_s, workers=args.workers,
        )
        from kfops.serving.protocol.auth import token_from_environment

        options.control_token = token_from_environment()
        if args.no_inference_log:
            options.inference_log_dir = None
        serve(options, cfg)
    except KfopsError as err:
        from kfops.core.redaction import redact_uri

        hint = f" ({err.hint})" if err.hint else ""
        print(redact_uri(f"kfops.serving: error: {err}{hint}"), file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
