"""Contract tests for the cluster path (`kfops submit`, `runs`, `schedule`).

A contract test: no Kubeflow cluster can run here, so a local HTTP server on 127.0.0.1 answers
the KFP v2beta1 REST API the way the real one does (paths and JSON shapes taken from
kfp_server_api 2.x: /apis/v2beta1/healthz, pipelines, pipelines/upload, pipelines/upload_version,
experiments, runs, recurringruns) and records every request. The real `kfp.client.Client` talks
to it; the tests assert on what was sent. What a real cluster then does with it (scheduling pods,
pulling images) is not covered.

Where the real server is strict, so is this one, from upstream's own definitions rather than ours
(kubeflow/pipelines 2.17.0; excerpts vendored under tests/infra/upstream/kubeflow-pipelines/):
- an upload is parsed as the API server does (backend/src/apiserver/template/v2_template.go): the
  YAML document holding the spec goes through the official ``PipelineSpec`` protobuf of
  kfp-pipeline-spec (unknown fields refused), schemaVersion must be 2.1.0, the name non-empty and
  matching upstream's pattern, the root component present;
- errors are grpc-gateway's ``{"code", "message", "details"}``;
- namespaces behave as in the single-user install the platform Terraform deploys: the server
  accepts them and stores and lists everything under "" (ResourceManager.ReplaceNamespace);
- run states are v2beta1's RuntimeState, which has no ERROR.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from google.protobuf import json_format

from kfops.cli import main
from kfops.config import KfopsConfig
from tests.conftest import REPO_ROOT, free_port

pytestmark = pytest.mark.integration

TOKEN = "test-token-123"
UPSTREAM = REPO_ROOT / "tests" / "infra" / "upstream" / "kubeflow-pipelines"
# backend/api/v2beta1/run.proto, enum RuntimeState (vendored excerpt).
RUNTIME_STATES = frozenset(
    re.findall(r"^\s*([A-Z_]+) = \d+;", (UPSTREAM / "run.proto.RuntimeState.txt").read_text(), re.MULTILINE)
)
SCHEMA_VERSION = "2.1.0"  # v2_template.go SCHEMA_VERSION_2_1_0
NAME_PATTERN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"  # v2_template.go, unanchored
CODE_VERSION = "abc123def456"
API = "/apis/v2beta1"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)

    def uploaded_file(self) -> bytes:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + self.headers["content-type"].encode() + b"\r\n\r\n" + self.body)
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") == "uploadfile":
                return part.get_payload(decode=True)
        raise AssertionError("no uploadfile part in the multipart body")


@dataclass
class FakeKfp:
    """State of the fake KFP backend, plus the requests it received."""

    requests: list[Recorded] = field(default_factory=list)
    pipelines: dict[str, dict] = field(default_factory=dict)
    versions: dict[str, list[dict]] = field(default_factory=dict)
    experiments: dict[str, dict] = field(default_factory=dict)
    runs: dict[str, dict] = field(default_factory=dict)
    recurring: dict[str, dict] = field(default_factory=dict)
    specs: dict[str, dict] = field(default_factory=dict)  # pipeline version id -> its uploaded spec
    run_states: list[str] = field(default_factory=lambda: ["SUCCEEDED"])
    accepted_token: str = TOKEN
    api_server_ready: bool = True  # False: the UI answers, the API server behind it does not

    def find(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]


def api_error(status: int, code: int, message: str) -> tuple[int, dict]:
    """grpc-gateway's error body, as the v2beta1 API answers (google.rpc.Status)."""
    return status, {"code": code, "message": message, "details": []}


def invalid_spec(message: str) -> tuple[int, dict]:
    return api_error(400, 3, f"Failed to create a pipeline due to error parsing pipeline spec: {message}")


def parse_upload(data: bytes) -> tuple[dict, str] | tuple[int, dict]:
    """(spec, name), or the error the API server answers, following v2_template.go."""
    from kfp.pipeline_spec import pipeline_spec_pb2

    try:
        documents = [doc for doc in yaml.safe_load_all(data) if doc is not None]
    except yaml.YAMLError as err:
        return invalid_spec(f"unable to decode yaml document: {err}")
    specs = [doc for doc in documents if isinstance(doc, dict) and "pipelineInfo" in doc]
    if len(specs) != 1:
        return invalid_spec("multiple pipeline specs provided" if specs else "no pipeline spec provided")
    spec = pipeline_spec_pb2.PipelineSpec()
    try:
        json_format.ParseDict(json.loads(json.dumps(specs[0], default=str)), spec)
    except json_format.ParseError as err:
        return invalid_spec(f"invalid v2 pipeline spec: {err}")
    if spec.schema_version != SCHEMA_VERSION:
        return invalid_spec(f"KFP only supports schema version 2.1.0, but the pipeline spec has version "
                            f"{spec.schema_version}")
    if not spec.pipeline_info.name:
        return invalid_spec("invalid v2 pipeline spec: name is empty")
    if not re.search(NAME_PATTERN, spec.pipeline_info.name):
        return invalid_spec("invalid v2 pipeline spec: name should consist of lower case alphanumeric characters")
    if not spec.HasField("root"):
        return invalid_spec("invalid v2 pipeline spec: root component is empty")
    return specs[0], spec.pipeline_info.name


# v2_template.go validatePipelineJobInputs: JSON kinds of google.protobuf.Value per parameterType.
_PARAMETER_KINDS = {"NUMBER_INTEGER": (int, float), "NUMBER_DOUBLE": (int, float), "STRING": (str,),
                    "BOOLEAN": (bool,), "LIST": (list,), "STRUCT": (dict,)}


def check_runtime_parameters(spec: dict, parameters: dict) -> tuple[int, dict] | None:
    """A run's or recurring run's parameters checked as the API server does
    (v2_template.go validatePipelineJobInputs): known names only, values of the declared type,
    every required one given."""
    declared = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    extra = sorted(set(parameters) - set(declared))
    if extra:
        return api_error(400, 3, f"parameter(s) provided are not required by pipeline: {', '.join(extra)}")
    for name, definition in declared.items():
        if name not in parameters:
            if not definition.get("isOptional") and "defaultValue" not in definition:
                return api_error(400, 3, f"parameter {name} is not optional, yet has neither default value nor "
                                         "user provided value")
            continue
        value, kinds = parameters[name], _PARAMETER_KINDS[definition["parameterType"]]
        if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
            return api_error(400, 3, f"input parameter {name} requires type {definition['parameterType']}")
    return None


def _display_name_filter(query: dict[str, list[str]]) -> str | None:
    if "filter" not in query:
        return None
    return json.loads(query["filter"][0])["predicates"][0]["stringValue"]


def make_handler(state: FakeKfp):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def _reply(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            record = Recorded(self.command, parts.path, parse_qs(parts.query),
                              {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
            state.requests.append(record)
            status, payload = route(state, record)
            self._reply(status, payload)

        do_GET = do_POST = do_DELETE = _handle

    return Handler


def route(state: FakeKfp, req: Recorded) -> tuple[int, dict]:
    path, method = req.path, req.method
    if req.headers.get("authorization") != f"Bearer {state.accepted_token}":
        return api_error(401, 16, "Unauthorized")
    if path == f"{API}/healthz":
        # The endpoint is the UI (ml-pipeline-ui), which proxies /apis to the API server and answers
        # its own healthz (frontend/server/handlers/healthz.ts): 200 either way, apiServerReady says.
        if not state.api_server_ready:
            return 200, {"apiServerReady": False, "buildDate": "", "frontendCommitHash": "", "frontendTagName": "2.17.0"}
        return 200, {"apiServerReady": True, "apiServerCommitHash": "4a3592c", "apiServerTagName": "2.17.0",
                     "apiServerMultiUser": False, "multi_user": False, "pipelineStore": "database",
                     "frontendTagName": "2.17.0"}
    if not state.api_server_ready:
        return api_error(503, 14, "upstream connect error")
    if path == f"{API}/pipelines" and method == "GET":
        name = _display_name_filter(req.query)
        found = [p for p in state.pipelines.values() if name is None or p["display_name"] == name]
        return 200, {"pipelines": found, "total_size": len(found)} if found else {}
    if path == f"{API}/pipelines/upload" and method == "POST":
        parsed = parse_upload(req.uploaded_file())
        if isinstance(parsed[0], int):
            return parsed
        pipeline_id = str(uuid.uuid4())
        # Single-user install: the namespace sent is accepted and replaced by "".
        pipeline = {"pipeline_id": pipeline_id, "display_name": req.query.get("name", [parsed[1]])[0],
                    "namespace": "", "created_at": "2024-05-01T10:00:00Z"}
        state.pipelines[pipeline_id] = pipeline
        # KFP creates a first version named like the pipeline.
        state.versions[pipeline_id] = [{"pipeline_id": pipeline_id, "pipeline_version_id": str(uuid.uuid4()),
                                        "display_name": pipeline["display_name"]}]
        state.specs[state.versions[pipeline_id][0]["pipeline_version_id"]] = parsed[0]
        return 200, pipeline
    if path.startswith(f"{API}/pipelines/") and path.endswith("/versions") and method == "GET":
        pipeline_id = path.split("/")[4]
        name = _display_name_filter(req.query)
        found = [v for v in state.versions.get(pipeline_id, []) if name is None or v["display_name"] == name]
        return 200, {"pipeline_versions": found, "total_size": len(found)} if found else {}
    if path == f"{API}/pipelines/upload_version" and method == "POST":
        pipeline_id = req.query["pipelineid"][0]
        if pipeline_id not in state.pipelines:
            return api_error(404, 5, f"Failed to create a pipeline version: pipeline {pipeline_id} not found")
        parsed = parse_upload(req.uploaded_file())
        if isinstance(parsed[0], int):
            return parsed
        version = {"pipeline_id": pipeline_id, "pipeline_version_id": str(uuid.uuid4()),
                   "display_name": req.query["name"][0], "created_at": "2024-05-01T10:00:00Z"}
        state.versions[pipeline_id].append(version)
        state.specs[version["pipeline_version_id"]] = parsed[0]
        return 200, version
    if path == f"{API}/experiments" and method == "GET":
        name = _display_name_filter(req.query)
        found = [e for e in state.experiments.values() if name is None or e["display_name"] == name]
        return 200, {"experiments": found, "total_size": len(found)} if found else {}
    if path == f"{API}/experiments" and method == "POST":
        body = req.json()
        experiment = {"experiment_id": str(uuid.uuid4()), "display_name": body["display_name"],
                      "namespace": "", "storage_state": "AVAILABLE"}
        state.experiments[experiment["experiment_id"]] = experiment
        return 200, experiment
    if path in (f"{API}/runs", f"{API}/recurringruns") and method == "POST":
        body = req.json()
        spec = state.specs[body["pipeline_version_reference"]["pipeline_version_id"]]
        refused = check_runtime_parameters(spec, body.get("runtime_config", {}).get("parameters", {}))
        if refused:
            return refused
    if path == f"{API}/runs" and method == "POST":
        run = {**req.json(), "run_id": str(uuid.uuid4()), "state": "PENDING", "created_at": "2024-05-01T10:00:00Z",
               "finished_at": "1970-01-01T00:00:00Z", "storage_state": "AVAILABLE"}
        state.runs[run["run_id"]] = run
        return 200, run
    if path == f"{API}/runs" and method == "GET":
        runs = [r for r in state.runs.values()
                if "experiment_id" not in req.query or r["experiment_id"] == req.query["experiment_id"][0]]
        return 200, {"runs": runs, "total_size": len(runs)} if runs else {}
    if path.startswith(f"{API}/runs/") and method == "GET":
        run = state.runs.get(path.rsplit("/", 1)[1])
        if run is None:
            return api_error(404, 5, "Failed to get a run: run not found")
        run["state"] = state.run_states.pop(0) if len(state.run_states) > 1 else state.run_states[0]
        assert run["state"] in RUNTIME_STATES, f"{run['state']} is not a v2beta1 RuntimeState"
        if run["state"] == "FAILED":
            run["error"] = {"code": 2, "message": "task train failed: OOMKilled"}
        return 200, run
    if path == f"{API}/recurringruns" and method == "POST":
        body = req.json()
        recurring = {**body, "recurring_run_id": str(uuid.uuid4()), "status": "ENABLED"}
        state.recurring[recurring["recurring_run_id"]] = recurring
        return 200, recurring
    if path == f"{API}/recurringruns" and method == "GET":
        # The generated client reads this list under the camelCase key.
        return 200, {"recurringRuns": list(state.recurring.values()), "total_size": len(state.recurring)}
    if path.startswith(f"{API}/recurringruns/") and method == "DELETE":
        state.recurring.pop(path.rsplit("/", 1)[1], None)
        return 200, {}
    return api_error(404, 5, f"Not Found: {method} {path}")


@pytest.fixture
def fake_kfp():
    state = FakeKfp()
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


MLFLOW = "http://mlflow.kubeflow.svc:5000"
FEAST_REGISTRY = "s3://kfops-contract/feast/registry.db"


@pytest.fixture
def cluster_env(monkeypatch, tmp_path):
    monkeypatch.setenv("KFOPS_KFP_TOKEN", TOKEN)
    monkeypatch.setenv("KFOPS_CODE_VERSION", CODE_VERSION)
    # Keep kfp's client context (~/.config/kfp/context.json) out of the user's home.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    # A cluster-shaped config: stores the pods can reach (submit refuses local files).
    return ["--set", f"registry.tracking_uri={MLFLOW}", "--set", f"features.registry={FEAST_REGISTRY}",
            "--set", "state.store=s3://kfops-cluster/state"]


def cli(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def test_submit_uploads_the_compiled_pipeline_and_starts_a_run(fake_kfp, cluster_env, capsys):
    state, host = fake_kfp
    code = cli("submit", "training", "--host", host, "--experiment", "contract-exp", "--namespace", "team-a",
               *cluster_env)
    out = capsys.readouterr().out
    assert code == 0, out

    # Every request carries the bearer token.
    assert state.requests and all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in state.requests)

    (upload,) = state.find("POST", f"{API}/pipelines/upload")
    assert upload.query["name"] == ["kfops-training"]
    assert upload.query["namespace"] == ["team-a"]
    spec = next(yaml.safe_load_all(upload.uploaded_file()))
    assert spec["pipelineInfo"]["name"] == "kfops-training"
    assert "config" in spec["root"]["inputDefinitions"]["parameters"]
    baked = KfopsConfig.from_json(spec["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"])
    assert baked.registry.tracking_uri == MLFLOW and baked.features.registry == FEAST_REGISTRY
    # Paths as written: resolved in the pod, not against this machine's checkout.
    assert baked.data_dir == Path(".kfops") and baked.validation.suites_dir == Path("expectations")
    assert str(REPO_ROOT) not in upload.uploaded_file().decode()

    (version_upload,) = state.find("POST", f"{API}/pipelines/upload_version")
    version_name = version_upload.query["name"][0]
    assert version_name.startswith(f"kfops-training-{CODE_VERSION}-")
    assert version_upload.uploaded_file() == upload.uploaded_file()
    pipeline_id = version_upload.query["pipelineid"][0]
    version_id = state.versions[pipeline_id][-1]["pipeline_version_id"]

    (exp_create,) = state.find("POST", f"{API}/experiments")
    assert exp_create.json() == {"display_name": "contract-exp", "namespace": "team-a"}
    experiment_id = next(iter(state.experiments))

    (run_create,) = state.find("POST", f"{API}/runs")
    body = run_create.json()
    assert body["pipeline_version_reference"] == {"pipeline_id": pipeline_id, "pipeline_version_id": version_id}
    assert body["experiment_id"] == experiment_id
    assert "pipeline_spec" not in body  # the run references the uploaded version, not an inline copy
    run_id = next(iter(state.runs))
    assert f"{host}/#/runs/details/{run_id}" in out
    assert version_name in out


def test_a_config_with_local_stores_is_refused_before_anything_is_sent(fake_kfp, cluster_env, capsys, tmp_path):
    state, host = fake_kfp
    code = cli("submit", "training", "--host", host, "--set", f"data_dir={tmp_path / 'data'}")
    err = capsys.readouterr().err
    assert code == 2
    for key in ("registry.tracking_uri", "features.registry", "data_dir"):
        assert key in err, err
    assert state.requests == []
    code = cli("schedule", "training", "--cron", "0 3 * * *", "--host", host, *cluster_env,
               "--set", "registry.tracking_uri=sqlite:///mlflow.db")
    assert code == 2 and "registry.tracking_uri 'sqlite:///mlflow.db'" in capsys.readouterr().err
    assert state.requests == []


def test_resubmitting_the_same_code_and_config_reuses_the_version(fake_kfp, cluster_env, capsys):
    state, host = fake_kfp
    assert cli("submit", "training", "--host", host, *cluster_env) == 0
    assert cli("submit", "training", "--host", host, *cluster_env) == 0
    capsys.readouterr()
    assert len(state.find("POST", f"{API}/pipelines/upload")) == 1
    assert len(state.find("POST", f"{API}/pipelines/upload_version")) == 1
    assert len(state.find("POST", f"{API}/experiments")) == 1  # found by name the second time
    assert len(state.runs) == 2
    assert {r["pipeline_version_reference"]["pipeline_version_id"] for r in state.runs.values()} == {
        state.versions[next(iter(state.pipelines))][-1]["pipeline_version_id"]}


def test_wait_follows_the_run_until_it_succeeds(fake_kfp, cluster_env, capsys):
    state, host = fake_kfp
    state.run_states = ["RUNNING", "RUNNING", "SUCCEEDED"]
    code = cli("submit", "training", "--host", host, "--wait", "--poll-interval", "0.01", *cluster_env)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "state: RUNNING" in out and "state: SUCCEEDED" in out
    run_id = next(iter(state.runs))
    assert len(state.find("GET", f"{API}/runs/{run_id}")) == 3


def test_wait_exits_non_zero_when_the_run_fails(fake_kfp, cluster_env, capsys):
    state, host = fake_kfp
    state.run_states = ["RUNNING", "FAILED"]
    code = cli("submit", "training", "--host", host, "--wait", "--poll-interval", "0.01", *cluster_env)
    captured = capsys.readouterr()
    assert code == 1
    assert "FAILED" in captured.err and "OOMKilled" in captured.err


def test_wait_is_bounded_by_its_timeout(fake_kfp, cluster_env, capsys):
    state, host = fake_kfp
    state.run_states = ["RUNNING"]  # never ends
    code = cli("submit", "training", "--host", host, "--wait", "--timeout", "0", "--poll-interval", "0.01",
               *cluster_env)
    assert code == 3
    assert "still RUNNING" in capsys.readouterr().err


def test_schedule_creates_a_recurring_run_with_a_kfp_cron(fake_kfp, cluster_env, capsys, monkeypatch):
    state, host = fake_kfp
    # pipelines/retraining.py is another engineer's and still moving; the contract is the same for any
    # pipeline, so the schedule is checked on the training pipeline's YAML.
    monkeypatch.setitem(__import__("kfops.adapters.kfp_local", fromlist=["PIPELINES"]).PIPELINES, "retraining",
                        "pipelines.training:create_pipeline")
    code = cli("schedule", "retraining", "--cron", "0 3 * * *", "--host", host, "--experiment", "nightly",
               "--name", "nightly-retrain", "--namespace", "team-a", *cluster_env)
    out = capsys.readouterr().out
    assert code == 0, out
    (create,) = state.find("POST", f"{API}/recurringruns")
    body = create.json()
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert body["display_name"] == "nightly-retrain"
    assert body["mode"] == "ENABLE" and body["no_catchup"] is True and body["max_concurrency"] == 1
    pipeline_id = next(iter(state.pipelines))
    assert body["pipeline_version_reference"] == {
        "pipeline_id": pipeline_id, "pipeline_version_id": state.versions[pipeline_id][-1]["pipeline_version_id"]}
    assert state.versions[pipeline_id][-1]["display_name"].startswith(f"kfops-training-{CODE_VERSION}-")
    assert body["experiment_id"] == next(iter(state.experiments))
    (exp_create,) = state.find("POST", f"{API}/experiments")
    assert exp_create.json()["namespace"] == "team-a"

    assert cli("schedule", "list", "--host", host, *cluster_env) == 0
    listed = capsys.readouterr().out
    recurring_id = next(iter(state.recurring))
    assert recurring_id in listed and "0 0 3 * * *" in listed and "nightly-retrain" in listed

    assert cli("schedule", "delete", recurring_id, "--host", host, *cluster_env) == 0
    assert state.find("DELETE", f"{API}/recurringruns/{recurring_id}")
    assert state.recurring == {}


def test_a_recurring_retraining_gets_a_moving_window_as_a_pipeline_parameter(fake_kfp, cluster_env, capsys):
    """`--window-days` was refused without --local: a KFP recurring run checked the window it was
    compiled with at every run. It is now the retraining pipeline's `window_days` input, which
    the API server checks against the uploaded spec (validatePipelineJobInputs)."""
    state, host = fake_kfp
    code = cli("schedule", "retraining", "--cron", "0 3 * * *", "--window-days", "14", "--host", host, *cluster_env)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "over the 14 days before each run's day" in out
    (create,) = state.find("POST", f"{API}/recurringruns")
    assert create.json()["runtime_config"]["parameters"] == {"window_days": 14}
    version_id = create.json()["pipeline_version_reference"]["pipeline_version_id"]
    spec = state.specs[version_id]
    # What the API server would refuse, so the fake is no laxer than upstream.
    assert check_runtime_parameters(spec, {"window_days": "14"})[1]["message"] == \
        "input parameter window_days requires type NUMBER_INTEGER"
    assert "not required by pipeline: window" in check_runtime_parameters(spec, {"window": 14})[1]["message"]
    assert check_runtime_parameters(spec, {}) is None
    assert cli("schedule", "list", "--host", host, *cluster_env) == 0
    assert "(window: the 14 days before each run)" in capsys.readouterr().out


def test_a_one_off_run_with_window_days_is_compiled_over_the_days_before_today(fake_kfp, cluster_env, capsys):
    """`kfops submit --window-days N` runs once over the window a recurring run started today
    would check: the dates are in the uploaded config, so the run sends no parameter."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    state, host = fake_kfp
    code = cli("submit", "retraining", "--window-days", "14", "--host", host, *cluster_env)
    out = capsys.readouterr().out
    assert code == 0, out
    (upload,) = state.find("POST", f"{API}/pipelines/upload")
    spec = next(yaml.safe_load_all(upload.uploaded_file()))
    baked = KfopsConfig.from_json(spec["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"])
    end = dt.datetime.now(ZoneInfo(baked.validation.window_timezone)).date() - dt.timedelta(days=1)
    assert baked.window == (end - dt.timedelta(days=13), end)
    assert f"over {end - dt.timedelta(days=13)}..{end}" in out
    (run_create,) = state.find("POST", f"{API}/runs")
    assert not run_create.json().get("runtime_config", {}).get("parameters")


def test_a_schedule_without_a_moving_window_sends_no_parameters(fake_kfp, cluster_env, capsys):
    state, host = fake_kfp
    assert cli("schedule", "retraining", "--cron", "0 3 * * *", "--host", host, *cluster_env) == 0
    (create,) = state.find("POST", f"{API}/recurringruns")
    assert not create.json().get("runtime_config", {}).get("parameters")
    assert "over the config's dataset window" in capsys.readouterr().out
    assert cli("schedule", "list", "--host", host, *cluster_env) == 0
    assert "window:" not in capsys.readouterr().out


@pytest.mark.parametrize(("cron", "problem"), [("61 * * * *", "out of range"), ("bad bad bad bad bad", "bad"),
                                               ("0 0 30 2 *", "never fires"), ("0 3 * * * * *", "7 fields")])
def test_a_bad_cron_is_refused_before_anything_is_compiled_or_sent(fake_kfp, cluster_env, capsys, cron, problem):
    """`61 * * * *` went to KFP as `0 61 * * * *`, after a pipeline version was uploaded for it."""
    state, host = fake_kfp
    code = cli("schedule", "training", "--cron", cron, "--host", host, *cluster_env)
    captured = capsys.readouterr()
    assert code == 2
    assert f"invalid cron '{cron}'" in captured.err and problem in captured.err, captured.err
    assert state.requests == []  # not even the health probe


def test_runs_list_and_get(fake_kfp, cluster_env, capsys):
    state, host = fake_kfp
    assert cli("submit", "training", "--host", host, "--experiment", "listed", *cluster_env) == 0
    run_id = next(iter(state.runs))
    capsys.readouterr()
    assert cli("runs", "list", "--host", host, "--experiment", "listed", "--namespace", "team-a", *cluster_env) == 0
    listed = capsys.readouterr().out
    assert run_id in listed
    (list_request,) = state.find("GET", f"{API}/runs")
    assert list_request.query["experiment_id"] == [next(iter(state.experiments))]
    assert cli("runs", "list", "--host", host, "--namespace", "team-a", "--json", *cluster_env) == 0
    listed_all = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in listed_all] == [run_id] and listed_all[0]["finished_at"] is None
    assert state.find("GET", f"{API}/runs")[-1].query["namespace"] == ["team-a"]
    assert cli("runs", "get", run_id, "--host", host, *cluster_env) == 0
    shown = capsys.readouterr().out
    assert "SUCCEEDED" in shown and f"{host}/#/runs/details/{run_id}" in shown


def test_an_endpoint_that_does_not_answer_is_a_cluster_error(cluster_env, capsys):
    port = free_port()  # nothing listens there
    code = cli("runs", "list", "--host", f"http://127.0.0.1:{port}", *cluster_env)
    assert code == 3
    assert "cannot reach Kubeflow Pipelines" in capsys.readouterr().err


def test_a_refused_token_is_a_cluster_error_naming_its_source(fake_kfp, cluster_env, capsys, monkeypatch):
    state, host = fake_kfp
    monkeypatch.setenv("KFOPS_KFP_TOKEN", "wrong-token")
    code = cli("runs", "list", "--host", host, *cluster_env)
    err = capsys.readouterr().err
    assert code == 3
    assert "HTTP 401" in err and "KFOPS_KFP_TOKEN" in err
    assert state.runs == {} and len(state.requests) == 1  # stopped at the health probe


PIPELINE_ROOT = "s3://kfops-contract/pipeline-root"


def test_runs_and_recurring_runs_carry_the_pipeline_root(fake_kfp, cluster_env, capsys, monkeypatch):
    state, host = fake_kfp
    root = ["--set", f"cluster.pipeline_root={PIPELINE_ROOT}"]
    assert cli("submit", "training", "--host", host, *cluster_env, *root) == 0
    (run_create,) = state.find("POST", f"{API}/runs")
    assert run_create.json()["runtime_config"]["pipeline_root"] == PIPELINE_ROOT
    # The IR carries it as the default too, for runs started from the UI.
    (upload,) = state.find("POST", f"{API}/pipelines/upload")
    assert next(yaml.safe_load_all(upload.uploaded_file()))["defaultPipelineRoot"] == PIPELINE_ROOT

    assert cli("schedule", "training", "--cron", "0 3 * * *", "--host", host, *cluster_env, *root) == 0
    (recurring,) = state.find("POST", f"{API}/recurringruns")
    assert recurring.json()["runtime_config"]["pipeline_root"] == PIPELINE_ROOT


def test_the_contract_server_parses_uploads_as_the_api_server_does():
    """The check itself: what the real server refuses, this one refuses too, in the real error shape."""
    from kfops.adapters.kfp_local import compile_pipeline
    from kfops.config import load_config

    with tempfile.TemporaryDirectory() as folder:
        package = compile_pipeline(load_config(None, [], environ={}), "training", Path(folder) / "p.yaml")
        good = package.read_bytes()
    _, name = parse_upload(good)
    assert name == "kfops-training"

    def refused(data: bytes) -> str:
        status, body = parse_upload(data)
        assert status == 400 and set(body) == {"code", "message", "details"} and body["code"] == 3
        return body["message"]

    doc = yaml.safe_load(good)
    assert "schema version 2.1.0" in refused(yaml.safe_dump({**doc, "schemaVersion": "2.0.0"}).encode())
    assert "invalid v2 pipeline spec" in refused(yaml.safe_dump({**doc, "pipelineInfo": {"nmae": "x"}}).encode())
    assert "root component is empty" in refused(yaml.safe_dump({k: v for k, v in doc.items() if k != "root"}).encode())
    assert "name is empty" in refused(yaml.safe_dump({**doc, "pipelineInfo": {"name": ""}}).encode())
    assert refused(b"not: [a pipeline")


def test_an_upload_the_server_refuses_is_a_cluster_error_with_its_message(fake_kfp, cluster_env, capsys, monkeypatch):
    state, host = fake_kfp
    from kfops.adapters import kfp_local

    real = kfp_local.compile_pipeline

    def old_schema(cfg, name, output):
        path = real(cfg, name, output)
        path.write_text(path.read_text().replace("schemaVersion: 2.1.0", "schemaVersion: 2.0.0"))
        return path

    monkeypatch.setattr(kfp_local, "compile_pipeline", old_schema)
    code = cli("submit", "training", "--host", host, *cluster_env)
    err = capsys.readouterr().err
    assert code == 3, err
    assert "schema version 2.1.0" in err
    assert state.runs == {}


def test_a_ui_whose_api_server_is_down_is_a_cluster_error(fake_kfp, cluster_env, capsys):
    state, host = fake_kfp
    state.api_server_ready = False
    code = cli("runs", "list", "--host", host, *cluster_env)
    err = capsys.readouterr().err
    assert code == 3
    assert "API server (ml-pipeline) is not ready" in err
    assert len(state.requests) == 1  # stopped at the health probe


def test_kfops_waits_on_v2beta1_run_states_only():
    from kfops.adapters.kfp_api import FAILURE_STATES, SUCCESS_STATES, TERMINAL_STATES

    assert TERMINAL_STATES <= RUNTIME_STATES, f"not v2beta1 states: {sorted(TERMINAL_STATES - RUNTIME_STATES)}"
    assert {"SUCCEEDED", "SKIPPED"} == SUCCESS_STATES and {"FAILED", "CANCELED"} == FAILURE_STATES
