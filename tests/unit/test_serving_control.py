"""The serving control plane and bounded failure, piece by piece: the bearer token check, what a
reload may load, strict content types, the rate-limited failure log, a failing online store as
a 503, Redis timeouts, the log sink's bounded buffer and one-sided modes, the streamed traffic
split (against a real TCP backend on loopback), and the cluster's NetworkPolicy."""

from __future__ import annotations

import asyncio
import logging
import os
import threading

import orjson
import pytest

from kfops.errors import ConfigError, KfopsError
from kfops.serving.protocol import auth
from kfops.serving.protocol.payloads import (
    DependencyUnavailable,
    UnsupportedMediaType,
    check_json_content_type,
)
from kfops.serving.runtime.loading import ModelSource, ReloadPolicy, ReloadRefused
from kfops.serving.runtime.ratelog import RateLimitedLog
from tests.unit.test_serving_asgi import Sent, chunks, http_scope, receiver

TOKEN = "s3cret-token"


def scope_with(authorization: bytes | None, path: str = "/-/split", method: str = "POST") -> dict:
    headers = [(b"authorization", authorization)] if authorization is not None else []
    return http_scope(path, method, headers)


# --- the token ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "refused_because"), [
    (None, "needs Authorization: Bearer"),
    (b"Basic czNjcmV0", "needs Authorization: Bearer"),
    (b"Bearer", "needs Authorization: Bearer"),
    (b"Bearer wrong-token", "not this server's control-plane token"),
    (b"Bearer s3cret-token-and-more", "not this server's control-plane token"),
])
def test_a_request_without_the_right_bearer_token_is_refused(given, refused_because):
    assert refused_because in auth.check(scope_with(given), TOKEN)


def test_the_right_bearer_token_passes_whatever_the_scheme_case():
    assert auth.check(scope_with(b"Bearer s3cret-token"), TOKEN) is None
    assert auth.check(scope_with(b"bearer s3cret-token"), TOKEN) is None


def test_a_server_without_a_token_refuses_every_control_request():
    assert "control routes are off" in auth.check(scope_with(b"Bearer anything"), None)
    assert "control routes are off" in auth.check(scope_with(b"Bearer "), "")


def test_the_token_comes_from_the_mounted_file_before_the_variable(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("from-the-file\n")
    env = {auth.TOKEN_FILE_ENV: str(secret), auth.TOKEN_ENV: "from-the-variable"}
    assert auth.token_from_environment(env) == "from-the-file"
    assert auth.token_from_environment({auth.TOKEN_ENV: "from-the-variable"}) == "from-the-variable"
    assert auth.token_from_environment({}) is None
    secret.write_text("  \n")
    with pytest.raises(ConfigError, match="is empty"):
        auth.token_from_environment(env)
    with pytest.raises(ConfigError, match="cannot read"):
        auth.token_from_environment({auth.TOKEN_FILE_ENV: str(tmp_path / "absent")})


def test_a_refusal_is_a_401_with_a_json_body_and_a_bearer_challenge():
    sent = Sent()
    asyncio.run(auth.refuse(sent, "no"))
    assert sent.status == 401 and sent.json == {"error": "no"}
    assert (b"www-authenticate", b'Bearer realm="kfops-control"') in sent.headers


# --- what a reload may load ----------------------------------------------------------------------


@pytest.fixture
def policy(tmp_path) -> ReloadPolicy:
    (tmp_path / "root").mkdir()
    return ReloadPolicy(tracking_uri="http://mlflow:5000", model_names={"flights-delay"}, roots=[tmp_path / "root"])


CURRENT = ModelSource(model_uri="models:/flights-delay@champion", tracking_uri="http://mlflow:5000")


def test_a_reload_naming_another_tracking_server_is_refused(policy):
    with pytest.raises(ReloadRefused, match="cannot name another tracking server") as caught:
        policy.source({"model_uri": "models:/flights-delay/3", "tracking_uri": "http://attacker:5000"}, CURRENT)
    assert caught.value.status == 403


def test_a_reload_of_another_registered_model_is_refused(policy):
    with pytest.raises(ReloadRefused, match="does not load other-model"):
        policy.source({"model_uri": "models:/other-model/1"}, CURRENT)


def test_a_version_reload_stays_on_the_served_model_and_registry(policy):
    assert policy.source({"model_version": "7"}, CURRENT) == ModelSource(
        model_uri="models:/flights-delay/7", tracking_uri="http://mlflow:5000")
    # kfops' own client sends the tracking URI it has; the same one is fine
    same = policy.source({"model_uri": "models:/flights-delay@champion", "tracking_uri": "http://mlflow:5000"},
                         CURRENT)
    assert same.tracking_uri == "http://mlflow:5000"
    assert policy.source({}, CURRENT) is None  # reload what is served (an alias that moved)


@pytest.mark.parametrize(("body", "message"), [
    ({"model_version": "seven"}, "must be a version number"),
    ({"model_version": "7", "model_dir": "/x"}, "give one of"),
    ({"model_path": "/x"}, "unknown reload field"),
    ({"model_uri": "s3://bucket/model"}, "is not models:/"),
    ({"model_dir": 7}, "must be a path"),
])
def test_a_malformed_reload_is_a_400_naming_the_problem(policy, body, message):
    with pytest.raises(Exception, match=message) as caught:
        policy.source(body, CURRENT)
    assert caught.value.status == 400


def test_a_model_dir_reload_outside_the_roots_is_refused_before_anything_is_read(policy, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with pytest.raises(ReloadRefused, match="outside the folders a reload may load from"):
        policy.source({"model_dir": str(outside)}, CURRENT)
    escape = tmp_path / "root" / "link"
    escape.symlink_to(outside)  # inside by name, outside in fact
    with pytest.raises(ReloadRefused):
        policy.source({"model_dir": str(escape)}, CURRENT)
    with pytest.raises(ReloadRefused):
        policy.source({"model_dir": str(tmp_path / "root" / ".." / "elsewhere")}, CURRENT)
    inside = tmp_path / "root" / "model"
    assert policy.source({"model_dir": str(inside)}, CURRENT) == ModelSource(model_dir=inside.resolve())


def test_a_folder_without_a_model_file_is_refused_before_its_files_are_read(tmp_path):
    """Reading a FIFO blocks until someone writes to it: loading must fail without touching it."""
    from kfops.serving.runtime.loading import load_source

    folder = tmp_path / "not_a_model"
    folder.mkdir()
    os.mkfifo(folder / "huge.bin")
    outcome: list[BaseException] = []

    def load() -> None:
        try:
            load_source(ModelSource(model_dir=folder))
        except BaseException as err:  # handed to the test thread
            outcome.append(err)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout=60)  # a deadlock guard, not a timing assertion
    if worker.is_alive():  # it is reading the FIFO: release it so the thread ends
        with open(folder / "huge.bin", "wb"):
            pass
        worker.join(timeout=60)
        pytest.fail("load_source read the folder's files before checking that it holds a model")
    assert isinstance(outcome[0], KfopsError) and "kfops_model.json is missing" in str(outcome[0])


# --- content types -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x"])
def test_a_body_declared_as_anything_but_json_is_a_415(value):
    with pytest.raises(UnsupportedMediaType, match="is not JSON") as caught:
        check_json_content_type(value)
    assert caught.value.status == 415


@pytest.mark.parametrize("value", [None, "application/json", "application/json; charset=utf-8",
                                   "Application/JSON", "application/cloudevents+json", "application/vnd.x+json"])
def test_json_bodies_and_bodies_without_a_type_are_accepted(value):
    check_json_content_type(value)


# --- bounded failure -----------------------------------------------------------------------------


def test_a_recurring_failure_is_logged_once_per_interval_with_a_count(caplog):
    now = [0.0]
    failures = RateLimitedLog(logging.getLogger("kfops.test.ratelog"), interval_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="kfops.test.ratelog"):
        written = [failures.warning("dependency", "redis down") for _ in range(1000)]
        now[0] = 9.9
        failures.warning("dependency", "redis down")
        failures.warning("timeout", "slow")  # another kind has its own interval
        now[0] = 10.0
        failures.warning("dependency", "redis down")
    assert written.count(True) == 1
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["redis down", "slow", "redis down (1000 more like it in the last 10s not logged)"]
    assert not any(r.exc_info for r in caplog.records)  # no traceback per failure


def test_a_failing_online_store_is_a_503_for_the_requests_that_needed_it(tmp_path):
    from kfops.core.model import load_model
    from kfops.core.requests import RawSchema
    from kfops.datasets.flights.serving import RAW_FLIGHT
    from kfops.serving.protocol.payloads import decode_v1
    from kfops.serving.runtime.engine import complete_raw
    from tests.support.serving_models import build_tiny_model

    def dead_store(_rows):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")

    spec = load_model(build_tiny_model(tmp_path / "model", rounds=2)).spec
    flight = {"carrier": "UA", "origin": "EWR", "dest": "IAH", "tailnum": "N1", "distance": 1400,
              "sched_dep": "2013-01-01T05:15"}
    with pytest.raises(DependencyUnavailable, match=r"online feature store failed .*ConnectionError") as caught:
        raw = RawSchema.of(RAW_FLIGHT)
        complete_raw([decode_v1({"instances": [flight]}, spec, raw)], spec, raw, dead_store)
    assert caught.value.status == 503 and caught.value.reason == "dependency_unavailable"


def test_a_lookup_that_refuses_the_requests_keys_is_a_400_not_a_dead_store(tmp_path):
    """The offline lookup of `kfops predict --raw` refuses a key its view's type cannot take; that
    was reported as "the online feature store failed ... retry later"."""
    from kfops.core.model import load_model
    from kfops.core.requests import RawSchema
    from kfops.datasets.flights.serving import RAW_FLIGHT
    from kfops.serving.protocol.payloads import RequestError, decode_v1
    from kfops.serving.runtime.engine import complete_raw
    from tests.support.serving_models import build_tiny_model

    def refusing(_rows):
        raise RequestError("key 'tailnum' is an integer in the feature views, but row 0 holds 'N1'")

    spec = load_model(build_tiny_model(tmp_path / "model", rounds=2)).spec
    flight = {"carrier": "UA", "origin": "EWR", "dest": "IAH", "tailnum": "N1", "distance": 1400,
              "sched_dep": "2013-01-01T05:15"}
    raw = RawSchema.of(RAW_FLIGHT)
    with pytest.raises(RequestError, match="row 0 holds 'N1'") as caught:
        complete_raw([decode_v1({"instances": [flight]}, spec, raw)], spec, raw, refusing)
    assert not isinstance(caught.value, DependencyUnavailable) and caught.value.status == 400


def test_redis_gets_socket_timeouts_unless_the_connection_string_sets_its_own():
    from kfops.adapters.feast_store import online_store_config, redis_with_timeouts
    from kfops.config import load_config

    assert redis_with_timeouts("10.0.0.1:6379", 2.0) == "10.0.0.1:6379,socket_timeout=2,socket_connect_timeout=2"
    assert redis_with_timeouts("r:6379,socket_timeout=5", 2.0) == "r:6379,socket_timeout=5,socket_connect_timeout=2"
    cfg = load_config(None, ["features.online_store=redis", "features.redis_timeout_s=0.5"], environ={})
    assert online_store_config(cfg)["connection_string"].endswith("socket_timeout=0.5,socket_connect_timeout=0.5")


def test_a_request_that_gave_up_waiting_is_not_scored():
    from kfops.serving.runtime.batching import AdaptiveBatcher

    seen: list[list[str]] = []

    async def scenario():
        batcher = AdaptiveBatcher(lambda items: seen.append(list(items)) or list(items), max_batch_size=10,
                                  max_latency_s=0.01)
        gone = asyncio.ensure_future(batcher.submit("gone"))
        await asyncio.sleep(0)  # queued
        gone.cancel()
        kept = await batcher.submit("kept")
        return kept

    assert asyncio.run(scenario()) == "kept"
    assert seen == [["kept"]]


# --- the log sink ----------------------------------------------------------------------------------


def sink_event(sink, kind: str, event_id: str, body: dict, now: float) -> None:
    sink.receive({"ce-type": kind, "ce-id": event_id, "ce-inferenceservicename": "flights-delay"},
                 orjson.dumps(body), now=now)


V1_REQUEST = {"instances": [{"distance": 1400.0, "carrier": "UA"}]}
V1_RESPONSE = {"predictions": [{"probability": 0.75, "label": 1}], "model_name": "flights-delay",
               "model_version": "7"}


def test_the_sink_holds_unpaired_events_within_a_byte_bound_oldest_first():
    from kfops.serving.sidecars.log_sink import REQUEST_TYPE, RESPONSE_TYPE, CloudEventSink

    one = len(orjson.dumps(V1_REQUEST))
    sink = CloudEventSink(store="/nowhere", pending_bytes=3 * one)
    for i in range(10):
        sink_event(sink, REQUEST_TYPE, f"r{i}", V1_REQUEST, now=float(i))
    assert list(sink.requests) == ["r7", "r8", "r9"] and sink.held_bytes == 3 * one
    assert sink.counts["dropped"] == 7
    sink_event(sink, RESPONSE_TYPE, "r8", V1_RESPONSE, now=10.0)  # pairs: written, no longer held
    assert len(sink.rows) == 1 and list(sink.requests) == ["r7", "r9"] and sink.held_bytes == 2 * one


def test_the_sink_drops_unpaired_events_past_their_age():
    from kfops.serving.sidecars.log_sink import REQUEST_TYPE, RESPONSE_TYPE, CloudEventSink

    sink = CloudEventSink(store="/nowhere", pending_ttl_s=30)
    sink_event(sink, REQUEST_TYPE, "old", V1_REQUEST, now=0.0)
    sink_event(sink, RESPONSE_TYPE, "young", V1_RESPONSE, now=20.0)
    sink.flush(now=40.0)
    assert "old" not in sink.requests and "young" in sink.responses and sink.counts["dropped"] == 1
    assert sink.held_bytes == len(orjson.dumps(V1_RESPONSE))


def test_request_and_response_modes_write_each_event_alone(tmp_path):
    from kfops.serving.runtime.inference_log import read_inference_logs
    from kfops.serving.sidecars.log_sink import REQUEST_TYPE, RESPONSE_TYPE, CloudEventSink

    requests_only = CloudEventSink(store=str(tmp_path / "requests"), mode="request")
    sink_event(requests_only, REQUEST_TYPE, "a", V1_REQUEST, now=1.7e9)
    sink_event(requests_only, RESPONSE_TYPE, "a", V1_RESPONSE, now=1.7e9)  # not this logger's side: ignored
    assert requests_only.flush(now=1.7e9) and not requests_only.requests
    logged = read_inference_logs(tmp_path / "requests")
    assert logged["request_id"].tolist() == ["a"] and logged["distance"].tolist() == [1400.0]
    assert logged["probability"].isna().all()

    responses_only = CloudEventSink(store=str(tmp_path / "responses"), mode="response")
    sink_event(responses_only, RESPONSE_TYPE, "b", V1_RESPONSE, now=1.7e9)
    assert responses_only.flush(now=1.7e9)
    logged = read_inference_logs(tmp_path / "responses")
    assert logged["probability"].tolist() == [0.75] and logged["model_version"].tolist() == ["7"]
    with pytest.raises(ValueError, match="mode must be one of"):
        CloudEventSink(store="/nowhere", mode="both")


# --- the traffic split -------------------------------------------------------------------------------


class Backend:
    """A real HTTP/1.1 server on loopback that records what arrives, as it arrives."""

    def __init__(self):
        self.received = bytearray()
        self.first_body_bytes = asyncio.Event()
        self.complete = asyncio.Event()
        self.closed_early = asyncio.Event()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader, writer) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(self.received) < length:
            data = await reader.read(65536)
            if not data:
                self.closed_early.set()
                writer.close()
                return
            self.received += data
            self.first_body_bytes.set()
        self.complete.set()
        body = orjson.dumps({"got": len(self.received)})
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        await writer.drain()
        writer.close()


def test_the_split_streams_a_body_to_the_backend_as_it_arrives():
    """The backend sees the first chunk before the client has sent the second: nothing is buffered whole."""
    from kfops.serving.sidecars.split import TrafficSplit

    async def scenario():
        backend = Backend()
        url = await backend.start()
        router = TrafficSplit(url, url, 0)
        await router._startup()
        first, second = b'{"instances": [' + b"1," * 1000, b"1]}"

        async def receive():
            if not backend.received and not sent_first:
                mark()
                return {"type": "http.request", "body": first, "more_body": True}
            await asyncio.wait_for(backend.first_body_bytes.wait(), 60)  # deadlock guard
            return {"type": "http.request", "body": second, "more_body": False}

        sent_first = False

        def mark():
            nonlocal sent_first
            sent_first = True

        sent = Sent()
        headers = [(b"content-length", str(len(first + second)).encode()), (b"content-type", b"application/json")]
        await router(http_scope("/v1/models/m:predict", "POST", headers), receive, sent)
        await router._shutdown()
        backend.server.close()
        return backend, sent, len(first + second)

    _, sent, size = asyncio.run(scenario())
    assert sent.status == 200 and orjson.loads(b"".join(m.get("body", b"") for m in sent[1:])) == {"got": size}
    assert (b"x-kfops-backend", b"stable") in sent.headers


def test_the_split_refuses_a_declared_oversize_body_before_choosing_a_backend(monkeypatch):
    from kfops.serving.sidecars import split

    monkeypatch.setattr(split, "MAX_BODY_BYTES", 10)
    router = split.TrafficSplit("http://stable", "http://canary", 50)
    sent = Sent()
    asyncio.run(router(http_scope("/v1/models/m:predict", headers=[(b"content-length", b"11")]),
                       receiver(*chunks(b"x" * 11)), sent))
    assert sent.status == 413 and sent.json == {"error": "request body over 10 bytes"}
    assert router.sent == 0


def test_a_client_leaving_mid_body_aborts_the_backend_request_and_gets_no_answer():
    from kfops.serving.sidecars.split import TrafficSplit

    async def scenario():
        backend = Backend()
        url = await backend.start()
        router = TrafficSplit(url, url, 0)
        await router._startup()
        sent = Sent()
        await router(http_scope("/v1/models/m:predict", "POST", [(b"content-length", b"100")]),
                     receiver({"type": "http.request", "body": b"half", "more_body": True},
                              {"type": "http.disconnect"}), sent)
        await router._shutdown()
        await asyncio.wait_for(backend.closed_early.wait(), 60)  # deadlock guard
        backend.server.close()
        return backend, sent

    backend, sent = asyncio.run(scenario())
    assert sent == [] and not backend.complete.is_set()


def test_the_split_share_changes_only_with_the_token():
    from kfops.serving.sidecars.split import CONTROL_PATH, TrafficSplit

    router = TrafficSplit("http://stable", "http://canary", 10, token=TOKEN)
    body = receiver(*chunks(b'{"canary_percent": 100}'))
    for authorization in (None, b"Bearer nope"):
        sent = Sent()
        asyncio.run(router(scope_with(authorization, CONTROL_PATH), body, sent))
        assert sent.status == 401 and router.canary_percent == 10
    sent = Sent()
    asyncio.run(router(scope_with(b"Bearer " + TOKEN.encode(), CONTROL_PATH), body, sent))
    assert sent.status == 200 and router.canary_percent == 100
    sent = Sent()
    asyncio.run(router(scope_with(None, CONTROL_PATH, "GET"), receiver(*chunks(b"")), sent))
    assert sent.status == 200 and sent.json["canary_percent"] == 100  # reading the share needs no token


# --- the cluster -------------------------------------------------------------------------------------


def test_the_network_policy_admits_only_the_data_plane_and_labelled_clients():
    from kubernetes.client import ApiClient

    from kfops.adapters.kserve_cluster import render_inference_service, render_network_policy
    from tests.unit.test_inference_service import cluster_config

    cfg = cluster_config()
    policy = render_network_policy(cfg)
    # The Kubernetes client's own model of a NetworkPolicy: a misspelt or misplaced field is lost on the way.
    api = ApiClient()
    model = api._ApiClient__deserialize(policy, "V1NetworkPolicy")
    assert api.sanitize_for_serialization(model) == policy
    assert policy["metadata"]["namespace"] == "kfops-serving"
    assert policy["spec"]["podSelector"] == {"matchLabels": {"serving.kserve.io/inferenceservice": "flights-delay"}}
    sources = policy["spec"]["ingress"][0]["from"]
    assert {s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for s in sources if "namespaceSelector" in s} == {"knative-serving", "istio-system"}
    assert {"podSelector": {"matchLabels": {"kfops.io/model-client": "true"}}} in sources
    assert all(set(s) <= {"namespaceSelector", "podSelector"} and len(s) == 1 for s in sources)  # no open rule

    manifest = render_inference_service(cluster_config("serving.kserve.transformer=true"), "7")
    for part in ("predictor", "transformer"):
        args = manifest["spec"][part]["containers"][0]["args"]
        assert args[args.index("--host") + 1] == "0.0.0.0"  # only the pod binds every interface


def test_local_sidecars_bind_loopback_by_default():
    import inspect

    from kfops.serving.kserve import transformer
    from kfops.serving.sidecars import log_sink, split

    for module in (transformer, split):
        source = inspect.getsource(module.main)
        assert 'add_argument("--host", default="127.0.0.1"' in source, module.__name__
    assert log_sink.build_parser().parse_args(["--store", "s3://b/p"]).host == "127.0.0.1"


# --- the transformer's request path ------------------------------------------------------------------


def transformer_with(lookup, tmp_path, **kwargs):
    from kfops.core.model import load_model
    from kfops.datasets.flights.serving import RAW_FLIGHT
    from kfops.serving.kserve.transformer import RawRequestTransformer
    from tests.support.serving_models import build_tiny_model

    app = RawRequestTransformer("flights", "http://127.0.0.1:9", lookup, max_latency_ms=0, builder=RAW_FLIGHT,
                                **kwargs)
    app.spec = load_model(build_tiny_model(tmp_path / "model", rounds=2)).spec
    return app


FLIGHT_BODY = orjson.dumps({"instances": [{"carrier": "UA", "origin": "EWR", "dest": "IAH", "tailnum": "N1",
                                           "distance": 1400, "sched_dep": "2013-01-01T05:15"}]})


def test_a_stuck_online_store_is_a_504_at_the_request_deadline(tmp_path):
    release = threading.Event()

    def stuck_store(_rows):
        release.wait(120)  # a paused Redis without a socket timeout
        raise ConnectionError("released")

    app = transformer_with(stuck_store, tmp_path, request_timeout_s=0.2)
    sent = Sent()
    try:
        asyncio.run(app(http_scope("/v1/models/flights:predict", headers=[(b"content-type", b"application/json")]),
                        receiver(*chunks(FLIGHT_BODY)), sent))
    finally:
        release.set()
        app._pool.shutdown(wait=True)
    assert sent.status == 504 and "serving.request_timeout_s" in sent.json["error"]


def test_the_transformer_answers_a_dead_store_with_503_and_text_with_415(tmp_path, caplog):
    def dead_store(_rows):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")

    app = transformer_with(dead_store, tmp_path, request_timeout_s=5)
    statuses = []
    with caplog.at_level(logging.WARNING, logger="kfops.serving.kserve.transformer"):
        for _ in range(20):
            sent = Sent()
            asyncio.run(app(http_scope("/v1/models/flights:predict"), receiver(*chunks(FLIGHT_BODY)), sent))
            statuses.append(sent.status)
            assert "online feature store failed" in sent.json["error"]
    app._pool.shutdown(wait=True)
    assert set(statuses) == {503}
    assert len([r for r in caplog.records if "503" in r.getMessage()]) == 1 and not any(r.exc_info for r in caplog.records)
    sent = Sent()
    asyncio.run(app(http_scope("/v1/models/flights:predict", headers=[(b"content-type", b"text/plain")]),
                    receiver(*chunks(FLIGHT_BODY)), sent))
    assert sent.status == 415


def test_the_server_process_bounds_every_registry_call(tmp_path):
    """A reload against a hung registry waited 570 s: the server's MLflow calls (start, reload, an
    alias's version) had MLflow's own minutes of retries. The server now takes registry.http_*."""
    import json
    import os
    import subprocess
    import sys
    import textwrap

    from kfops.config import load_config

    cfg = load_config(None, [f"data_dir={tmp_path}", "registry.http_timeout_s=7", "registry.http_max_retries=1"],
                      environ={})
    (tmp_path / "config.json").write_text(cfg.to_json())
    script = textwrap.dedent("""
        import json, os, sys
        import kfops.serving.kserve.server as server
        from kfops.serving.__main__ import main
        server.serve = lambda options, cfg: print(json.dumps({k: v for k, v in os.environ.items()
                                                               if k.startswith("MLFLOW_HTTP_REQUEST_")}))
        sys.exit(main(sys.argv[1:]))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST_")}
    done = subprocess.run([sys.executable, "-c", script, "--model-dir", str(tmp_path), "--config-json",
                           str(tmp_path / "config.json"), "--online-lookup", "none"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    bounds = json.loads(done.stdout.strip().splitlines()[-1])
    assert bounds["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7" and bounds["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
