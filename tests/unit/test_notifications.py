"""Run-end notifications (`notify`): what is sent, to a real HTTP server on loopback, and what a
webhook that fails, hangs or is gone does to the run (nothing: it is reported)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kfops.config import load_config
from kfops.runners.run_records import end_record, notify_run_end, start_record

TOKEN = "T000/B000/planted-webhook-token"


class Hook:
    """An incoming-webhook endpoint: records each JSON body; answers ``status`` after ``delay_s``."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.status, self.delay_s = 200, 0.0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                time.sleep(hook.delay_s)
                hook.bodies.append(json.loads(body))
                self.send_response(hook.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/{TOKEN}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    endpoint = Hook()
    yield endpoint
    endpoint.close()


def config_for(tmp_path, url: str, *overrides: str):
    return load_config(None, [f"data_dir={tmp_path / 'state'}", "project=shop", "registry.model_name=returns",
                              "notify.timeout_s=0.5", *overrides], environ={"KFOPS__NOTIFY__WEBHOOK_URL": url})


def ended(cfg, state: str, **fields):
    path = start_record(cfg, "training", cfg.data_dir / "logs" / "training-20261207-030000-000001-7-abcdef.log",
                        "subprocess")
    return end_record(path, state, seconds=4.2, **fields)


def test_a_failed_run_is_sent_with_what_failed(tmp_path, hook):
    cfg = config_for(tmp_path, hook.url)
    said = []
    notify_run_end(cfg, ended(cfg, "failed", failed_task="train", error="pipeline 'training' failed in task 'train': "
                              "TrainingError: the train split has no rows"), said.append)
    (body,) = hook.bodies
    assert body["text"] == (":x: kfops shop (returns): training run training-20261207-030000-000001-7-abcdef failed: "
                            "pipeline 'training' failed in task 'train': TrainingError: the train split has no rows")
    assert body["kfops"]["events"] == ["failed"] and body["kfops"]["failed_task"] == "train"
    assert body["kfops"]["seconds"] == 4.2 and body["kfops"]["project"] == "shop"
    assert said == ["kfops: notified the webhook: failed"]


def test_a_registered_or_refused_model_is_sent_and_a_quiet_run_is_not(tmp_path, hook):
    cfg = config_for(tmp_path, hook.url)
    verdict = tmp_path / "verdict.json"
    verdict.write_text(json.dumps({"blessed": True, "verdict": {"reasons": []}}))
    outputs = {"evaluate": {"verdict": str(verdict)}, "register": {"Output": "4"}}
    notify_run_end(cfg, ended(cfg, "succeeded", outputs=outputs), lambda line: None)
    assert hook.bodies[-1]["kfops"]["events"] == ["registered"] and "registered v4" in hook.bodies[-1]["text"]
    verdict.write_text(json.dumps({"blessed": False, "verdict": {"reasons": ["FAIL floor:roc_auc: roc_auc 0.6, needs >= 0.65"]}}))
    notify_run_end(cfg, ended(cfg, "succeeded", outputs={"evaluate": {"verdict": str(verdict)}}), lambda line: None)
    assert hook.bodies[-1]["kfops"]["events"] == ["refused"] and "floor:roc_auc" in hook.bodies[-1]["text"]
    count = len(hook.bodies)
    notify_run_end(cfg, ended(cfg, "succeeded", outputs={}), lambda line: None)  # decided nothing worth a message
    notify_run_end(cfg, ended(cfg, "interrupted", error="interrupted"), lambda line: None)  # not in the default events
    assert len(hook.bodies) == count
    only_failures = config_for(tmp_path, hook.url, "notify.events=[failed]")
    notify_run_end(only_failures, ended(only_failures, "succeeded", outputs=outputs), lambda line: None)
    assert len(hook.bodies) == count


@pytest.mark.parametrize("trouble", ["status", "slow", "gone"])
def test_a_webhook_that_fails_is_reported_without_its_url_and_within_the_timeout(tmp_path, hook, trouble):
    url = hook.url
    if trouble == "status":
        hook.status = 500
    elif trouble == "slow":
        hook.delay_s = 3.0
    else:
        hook.close()
    cfg = config_for(tmp_path, url)
    said = []
    started = time.monotonic()
    notify_run_end(cfg, ended(cfg, "failed", error="boom"), said.append)  # no exception: the run's result stands
    assert time.monotonic() - started < 2.5  # bounded by notify.timeout_s, not by the webhook
    (line,) = said
    expected = {"status": "answered HTTP 500", "slow": "did not answer within 0.5s", "gone": "could not be reached"}
    assert line.startswith("kfops: could not notify: the notify webhook (notify.webhook_url) ") and expected[trouble] in line
    assert TOKEN not in line and "127.0.0.1" not in line


def test_the_webhook_url_is_a_secret_nowhere_written(tmp_path, hook):
    from kfops.adapters.kfp_local import compile_pipeline

    cfg = config_for(tmp_path, hook.url)
    assert TOKEN not in cfg.to_json() and TOKEN not in repr(cfg) and TOKEN not in str(cfg.notify)
    assert cfg.secret_environment()["KFOPS__NOTIFY__WEBHOOK_URL"] == hook.url  # to a child's environment only
    # A model server never needs it: not the local process, its container, or the predictor's Secret keys.
    from kfops.adapters.kserve_cluster import predictor_environment

    assert "KFOPS__NOTIFY__WEBHOOK_URL" not in cfg.secret_environment(serving=True)
    assert "KFOPS__NOTIFY__WEBHOOK_URL" not in predictor_environment(cfg)[1]
    from tests.support.example import write_example_config

    example = load_config(write_example_config(tmp_path / "example"), [], environ={"KFOPS__NOTIFY__WEBHOOK_URL": hook.url})
    compiled = compile_pipeline(example, "training", tmp_path / "training.yaml")
    assert TOKEN not in compiled.read_text()
    with pytest.raises(Exception, match="must be an http") as refused:
        config_for(tmp_path, f"ftp://{TOKEN}")
    assert TOKEN not in str(refused.value)


def test_the_retraining_exit_handler_says_a_failed_run_and_a_retrain(tmp_path, hook):
    from kfops.adapters.state_store import state_store
    from kfops.steps.drift_check import record_retrain_outcome
    from tests.unit.test_retrain_state import POLICY, _attempt, _check

    cfg = config_for(tmp_path, hook.url, "notify.events=[failed, retrained]")
    assert record_retrain_outcome(cfg, "kfops-retraining-9", "FAILED", "Task drift failed.") == "none"
    assert hook.bodies[-1]["kfops"]["events"] == ["failed"] and "Task drift failed." in hook.bodies[-1]["text"]
    assert hook.bodies[-1]["kfops"]["run_name"] == "kfops-retraining-9"
    count = len(hook.bodies)
    assert record_retrain_outcome(cfg, "kfops-retraining-10", "SUCCEEDED") == "none"  # decided no retrain
    assert len(hook.bodies) == count
    _check(state_store(cfg), 0, POLICY, _attempt("kfops-retraining-11"))
    record_retrain_outcome(cfg, "kfops-retraining-11", "SUCCEEDED")
    assert hook.bodies[-1]["kfops"]["events"] == ["retrained"] and "completed" in hook.bodies[-1]["text"]


def _training_of(cfg, pipeline_run: str, blessed: bool, failed: str = "", register: bool = False) -> None:
    """What a retrain's training leaves in MLflow: an evaluated run tagged with its pipeline run,
    and, when blessed, the version register made (tagged the same way)."""
    from kfops.adapters import mlflow_registry as registry

    client = registry.client(cfg)
    experiment = client.get_experiment_by_name(cfg.registry.experiment)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(cfg.registry.experiment)
    run = client.create_run(experiment_id, tags={registry.PIPELINE_RUN_TAG: pipeline_run,
                                                 registry.BLESSED_TAG: str(blessed).lower(),
                                                 registry.FAILED_CHECKS_TAG: failed})
    client.set_terminated(run.info.run_id)
    if register:
        try:
            client.get_registered_model(cfg.registry.model_name)
        except Exception:
            client.create_registered_model(cfg.registry.model_name)
        client.create_model_version(cfg.registry.model_name, f"runs:/{run.info.run_id}/model", run.info.run_id,
                                    tags={registry.PIPELINE_RUN_TAG: pipeline_run})


def test_a_completed_retrain_on_a_cluster_says_what_its_gate_decided(tmp_path, hook):
    """The exit handler said only "retrained" (not sent by default), so a cluster user never heard
    that a retrain registered a model, or that the gate refused it, as a local run's user does."""
    from kfops.adapters.state_store import state_store
    from kfops.steps.drift_check import record_retrain_outcome
    from tests.unit.test_retrain_state import POLICY, _attempt, _check

    cfg = config_for(tmp_path, hook.url)  # the default events: failed, registered, refused
    refused_run, registered_run = "kfops-retraining-21", "kfops-retraining-22"
    _training_of(cfg, refused_run, blessed=False, failed="floor:roc_auc: roc_auc 0.61, needs >= 0.65")
    _training_of(cfg, registered_run, blessed=True, register=True)
    _check(state_store(cfg), 0, POLICY, _attempt(refused_run))
    record_retrain_outcome(cfg, refused_run, "SUCCEEDED")
    refused = hook.bodies[-1]
    assert refused["kfops"]["events"] == ["refused"] and refused["kfops"]["run_name"] == refused_run
    assert refused["text"].endswith("completed: retrain, not blessed: floor:roc_auc: roc_auc 0.61, needs >= 0.65")
    _check(state_store(cfg), 8, POLICY, _attempt(registered_run))  # after the cooldown: a second retrain
    record_retrain_outcome(cfg, registered_run, "SUCCEEDED")
    registered = hook.bodies[-1]
    assert registered["kfops"]["events"] == ["registered"]
    assert registered["text"].endswith("completed: retrain, blessed, registered v1")
    assert len(hook.bodies) == 2


def test_a_retrain_end_is_said_and_recorded_when_mlflow_cannot_answer(tmp_path, hook, capsys):
    import socket

    from kfops.adapters.state_store import state_store
    from kfops.steps.drift_check import record_retrain_outcome
    from tests.unit.test_retrain_state import POLICY, _attempt, _check

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    cfg = config_for(tmp_path, hook.url, f"registry.tracking_uri=http://127.0.0.1:{port}",
                     "registry.http_max_retries=0", "registry.http_timeout_s=2", "notify.events=[retrained]")
    _check(state_store(cfg), 0, POLICY, _attempt("kfops-retraining-31"))
    assert record_retrain_outcome(cfg, "kfops-retraining-31", "SUCCEEDED") == "completed"
    (only,) = hook.bodies  # registered and refused are not asked for: MLflow is not even asked
    assert only["text"].endswith("completed: retrain")
    cfg = config_for(tmp_path, hook.url, f"registry.tracking_uri=http://127.0.0.1:{port}",
                     "registry.http_max_retries=0", "registry.http_timeout_s=2", "notify.events=[retrained, registered]")
    _check(state_store(cfg), 8, POLICY, _attempt("kfops-retraining-32"))
    assert record_retrain_outcome(cfg, "kfops-retraining-32", "SUCCEEDED") == "completed"
    body = hook.bodies[-1]
    assert len(hook.bodies) == 2 and body["kfops"]["events"] == ["retrained"]
    assert "what its gate decided could not be read from MLflow" in body["text"]


def test_the_training_pipelines_exit_handler_tells_a_cluster_run_as_a_local_one_is_told(tmp_path, hook, monkeypatch):
    """A training run on a cluster (`kfops submit`, `kfops schedule training`) was told to nobody:
    only the retraining pipeline had an exit handler."""
    from kfops.steps.run_end import training_run_end

    cfg = config_for(tmp_path, hook.url)
    monkeypatch.setenv("KFOPS__NOTIFY__WEBHOOK_URL", hook.url)  # as the pod has it, from the cluster's Secret
    assert training_run_end(cfg.to_json(), "kfops-training-1", "FAILED", "Task train failed.") == "failed"
    failed = hook.bodies[-1]
    assert failed["kfops"]["pipeline"] == "training" and failed["kfops"]["run_name"] == "kfops-training-1"
    assert failed["text"].endswith("kfops-training-1 failed: pipeline run kfops-training-1 ended FAILED: Task train failed.")
    _training_of(cfg, "kfops-training-2", blessed=True, register=True)
    assert training_run_end(cfg, "kfops-training-2", "SUCCEEDED") == "registered"
    assert hook.bodies[-1]["text"].endswith("kfops-training-2 registered: blessed, registered v1")
    _training_of(cfg, "kfops-training-3", blessed=False, failed="floor:roc_auc: roc_auc 0.6, needs >= 0.65")
    assert training_run_end(cfg, "kfops-training-3", "SUCCEEDED") == "refused"
    assert training_run_end(cfg, "kfops-training-4", "SUCCEEDED") == ""  # nothing evaluated: nothing to tell
    assert len(hook.bodies) == 3
    quiet = config_for(tmp_path, hook.url, "notify.events=[failed]")
    assert training_run_end(quiet, "kfops-training-2", "SUCCEEDED") == "" and len(hook.bodies) == 3
