"""The training pipeline in containers, on the production profile, as a cluster would run it.

`kfops build` makes the pipeline and serving images (from a Debian-made base where one exists,
with this machine's pip settings), then `kfops run training --runner docker` runs the compiled
YAML with kfp.local's DockerRunner: each task in its own container, as the image's non-root user,
sharing only the pipeline root and the services on loopback:
- MLflow: a tracking server on PostgreSQL, artifacts on S3 (a moto server);
- Feast: a SQL registry on PostgreSQL, the online store on a Redis that asks for a password;
- deploy: the model server as a container of the serving image, with the predictor's environment.
A raw flight then gets its features from that Redis through the containerised server. A secret
planted in the environment must appear nowhere: not in the compiled YAML, the MLflow run, or a log.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from kfops.config import load_config
from tests.conftest import REPO_ROOT, free_port, need, port_open
from tests.support.production_profile import production_profile

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PIPELINE_IMAGE = "kfops:local-test"
SERVING_IMAGE = "kfops-serving:local-test"
BASE_IMAGE = os.environ.get("KFOPS_BASE_IMAGE", "kfops-base:bookworm")
REDIS_SECRET = f"planted-redis-{uuid.uuid4().hex}"
KFOPS = Path(sys.executable).parent / "kfops"


def docker_ready() -> bool:
    from kfops.cluster.images import docker_available

    return docker_available()


@pytest.fixture(scope="module")
def images():
    """Both images, built (or brought up to date: the layer cache makes that quick) by `kfops build`."""
    need(docker_ready(), "no Docker engine answers `docker info` (scripts/docker_engine.sh starts one)")
    base = BASE_IMAGE if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True,
                                        check=False).returncode == 0 else None
    command = [str(KFOPS), "build", "--role", "pipeline", "--role", "serving", "--pip-from-host",
               "--set", f"cluster.image={PIPELINE_IMAGE}", "--set", f"cluster.serving_image={SERVING_IMAGE}"]
    if base:  # Docker Hub is out of reach here: the Debian-made base, and torch from pip's own indexes
        command += ["--base-image", base, "--torch-index", ""]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=1800)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return {"pipeline": PIPELINE_IMAGE, "serving": SERVING_IMAGE, "build_output": result.stdout}


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    need(port_open("127.0.0.1", 5432), "PostgreSQL is not listening on 127.0.0.1:5432")
    need(shutil.which("redis-server") is not None, "redis-server is not installed")
    need((Path(sys.executable).parent / "moto_server").is_file(), "moto[server] is not installed")
    with production_profile(tmp_path_factory.mktemp("profile"), REDIS_SECRET) as running:
        yield running


@pytest.fixture(scope="module")
def containerised_run(images, profile, tmp_path_factory):
    root = tmp_path_factory.mktemp("containers")
    port = free_port()
    model_name = f"flights-containers-{uuid.uuid4().hex[:6]}"
    overrides = [
        f"data_dir={root / 'data'}", "dataset.start=2013-01-01", "dataset.end=2013-01-21",
        "train.xgboost.n_estimators=60", "evaluate.gate.min_roc_auc=0.5", "evaluate.behavioural_checks=false",
        f"registry.model_name={model_name}", f"registry.experiment={model_name}",
        f"features.project=containers_{uuid.uuid4().hex[:8]}",
        f"cluster.image={images['pipeline']}", f"cluster.serving_image={images['serving']}",
        f"serving.http_port={port}", "serving.startup_timeout_s=300", *profile.overrides,
    ]
    env = {**os.environ, **profile.env, "KFOPS_PROGRESS": "plain"}
    env.pop("KFOPS_PROJECT_DIR", None)
    command = [str(KFOPS), "run", "training", "--runner", "docker", "--config", str(REPO_ROOT / "kfops.yaml")]
    for item in overrides:
        command += ["--set", item]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False, timeout=1800)
    print(f"containerised training run: {time.perf_counter() - started:.0f} s")
    cfg = load_config(REPO_ROOT / "kfops.yaml", overrides, environ={})
    yield {"result": result, "cfg": cfg, "root": root, "port": port, "env": env, "profile": profile}
    from kfops.serving.local.container import stop_server_container

    stop_server_container(cfg)


@pytest.mark.parametrize("role", ["pipeline", "serving"])
def test_images_run_as_a_user_who_cannot_write_the_code(images, role):
    probe = ("id -u; python -c 'import kfops, sys; print(kfops.__file__)'; "
             "touch /opt/kfops/probe 2>/dev/null && echo WROTE-CODE-FOLDER; "
             "touch /opt/venv/probe 2>/dev/null && echo WROTE-VENV; true")
    result = subprocess.run(["docker", "run", "--rm", "--network", "host", images[role], "sh", "-c", probe],
                            capture_output=True, text=True, check=True, timeout=300)
    lines = result.stdout.split()
    assert lines[0] == "1000" and lines[1].startswith("/opt/venv/"), result.stdout
    assert "WROTE-CODE-FOLDER" not in result.stdout and "WROTE-VENV" not in result.stdout


def test_the_pipeline_runs_in_containers_and_registers(containerised_run):
    result = containerised_run["result"]
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    # Each of the seven tasks, and the exit handler (training-end), ran in a container of the
    # pipeline image: kfp.local's DockerRunner says so in the run log, once per task.
    (log,) = (containerised_run["root"] / "data" / "logs").glob("training-*.log")
    assert log.read_text().count(f"Found image '{PIPELINE_IMAGE}'") == 8, log.read_text()[-3000:]

    from kfops.adapters import mlflow_registry as registry

    cfg = containerised_run["cfg"]
    champion = registry.model_version(cfg, alias=registry.CHAMPION)
    assert champion is not None and str(champion.version) == "1"


def test_the_containerised_server_answers_a_raw_flight_from_redis(containerised_run):
    from kfops.adapters import docker_engine
    from kfops.serving.local.container import container_name

    assert containerised_run["result"].returncode == 0
    cfg = containerised_run["cfg"]
    state = docker_engine.container_state(container_name(cfg))
    assert state is not None and state.running and state.image == SERVING_IMAGE
    flight = {"carrier": "UA", "origin": "EWR", "dest": "IAH", "tailnum": "N14228", "distance": 1400.0,
              "flight": 1545, "sched_dep": "2013-01-21T17:15"}
    url = f"http://127.0.0.1:{containerised_run['port']}/v1/models/{cfg.registry.model_name}:predict"
    response = httpx.post(url, json={"instances": [flight]}, timeout=60, trust_env=False)
    assert response.status_code == 200, response.text
    prediction = response.json()["predictions"][0]
    assert 0.0 <= prediction["probability"] <= 1.0

    # The features came from the password-protected Redis: it holds the materialized rows.
    import redis

    host, port = cfg.features.redis_connection.split(":")
    assert redis.Redis(host=host, port=int(port), password=REDIS_SECRET).dbsize() > 0
    with pytest.raises(redis.AuthenticationError):  # and it does ask for the password
        redis.Redis(host=host, port=int(port)).dbsize()


def test_a_planted_secret_is_nowhere(containerised_run):
    result = containerised_run["result"]
    assert result.returncode == 0
    root = containerised_run["root"]
    places = {"run output": result.stdout + result.stderr}
    for path in (root / "data").rglob("*"):
        if path.is_file() and path.suffix in {".yaml", ".log", ".json", ".txt", ".html"}:
            places[str(path)] = path.read_text(errors="replace")
    compiled = root / "data" / "compiled" / "training.yaml"
    assert compiled.is_file()

    from kfops.adapters import mlflow_registry as registry

    cfg = containerised_run["cfg"]
    client = registry.client(cfg)
    experiment = client.get_experiment_by_name(cfg.registry.experiment)
    for run in client.search_runs([experiment.experiment_id]):
        places[f"mlflow run {run.info.run_id}"] = json.dumps({"params": run.data.params, "tags": run.data.tags})
    from kfops.adapters import docker_engine
    from kfops.serving.local.container import container_name

    places["server log"] = docker_engine.logs(container_name(cfg), tail=2000)
    leaked = [where for where, text in places.items() if REDIS_SECRET in text]
    assert not leaked, leaked


def test_the_predict_component_scores_raw_flights_in_a_container(containerised_run, monkeypatch):
    """components/predict/component.yaml in the pipeline image, as a pod runs it: the @champion
    from the MLflow server (artifacts on S3), the views joined from the containerised run's
    featurize sources; every probability equal to the model's on the training-set rows."""
    import numpy as np
    import pandas as pd
    from kfp import components, dsl, local

    from kfops.adapters import mlflow_registry as registry
    from kfops.core.model import load_model
    from kfops.runners.containers import docker_run_config, docker_runner_args

    assert containerised_run["result"].returncode == 0
    cfg = docker_run_config(containerised_run["cfg"])
    (featurized,) = cfg.pipeline_root.glob("*/featurize")
    training_set = pd.read_parquet(featurized / "training_set").sample(400, random_state=5)
    rows = cfg.pipeline_root / "inputs" / "rows.csv"  # kfp.local mounts the pipeline root, and only it
    rows.parent.mkdir(exist_ok=True)
    pd.DataFrame({
        "flight_id": training_set["flight_id"], "carrier": training_set["carrier"],
        "origin": training_set["origin"], "dest": training_set["dest"], "distance": training_set["distance"],
        "sched_dep": training_set["event_timestamp"].dt.tz_convert("America/New_York").dt.strftime("%Y-%m-%dT%H:%M"),
        "tailnum": training_set["tailnum"], "flight": training_set["flight"],
    }).to_csv(rows, index=False)
    predict = components.load_component_from_file(str(REPO_ROOT / "components" / "predict" / "component.yaml"))

    @dsl.pipeline(name="score-in-containers")
    def score():
        to_score = dsl.importer(artifact_uri=str(rows), artifact_class=dsl.Dataset)
        sources = dsl.importer(artifact_uri=str(featurized / "feast_sources"), artifact_class=dsl.Dataset)
        predict(config=cfg.portable().to_json(), rows=to_score.output, feast_sources=sources.output,
                log_predictions=True).set_container_image(PIPELINE_IMAGE)

    local.init(runner=local.DockerRunner(**docker_runner_args(cfg, containerised_run["env"])),
               pipeline_root=str(cfg.pipeline_root), raise_on_error=True)
    score()
    (scored_path,) = cfg.pipeline_root.glob("score-in-containers-*/predict/predictions")
    scored = pd.read_parquet(scored_path)
    assert scored["flight_id"].tolist() == training_set["flight_id"].tolist()
    for name, value in containerised_run["profile"].env.items():  # the S3 credentials, to fetch the model here
        monkeypatch.setenv(name, value)
    champion = registry.model_version(cfg, alias=registry.CHAMPION)
    model_dir = registry.fetch_model_dir(cfg.tracking_uri, f"models:/{cfg.registry.model_name}/{champion.version}")
    model = load_model(Path(model_dir))
    expected = model.predict_proba_encoded(model.spec.encode(training_set))
    np.testing.assert_allclose(scored["probability"].to_numpy(), expected, rtol=0, atol=1e-12)
    # log_predictions: the container wrote them to the inference log in the state store on S3,
    # with the credentials from its environment, where the drift job reads served requests.
    from kfops.serving.runtime.inference_log import read_inference_logs

    assert str(cfg.inference_log_location).startswith("s3://")
    logs = read_inference_logs(cfg.inference_log_location)
    logged = logs[logs["request_id"].str.startswith("predict-")]
    assert logged["model_version"].unique().tolist() == [str(champion.version)]
    np.testing.assert_array_equal(logged["probability"].to_numpy(), scored["probability"].to_numpy())


def test_the_rendered_log_sink_runs_in_the_serving_image_and_writes_logger_events_to_s3(images, profile, monkeypatch):
    """The Deployment `serving.kserve.log_sink` renders, its container as a pod would run it: the
    serving image, the rendered command, arguments and environment, a read-only root filesystem
    with /tmp its only scratch, the image's non-root user. KServe's logger's CloudEvents go in;
    the inference log comes out on S3 (moto), where the drift job reads it."""
    import datetime as dt

    from kfops.adapters import docker_engine
    from kfops.adapters.kserve_cluster import render_log_sink
    from kfops.serving.runtime.inference_log import read_inference_logs
    from kfops.serving.sidecars.log_sink import REQUEST_TYPE, RESPONSE_TYPE
    from tests.integration.conftest import wait_http
    from tests.integration.test_log_sink import event

    overrides = [*profile.overrides, "serving.kserve.log_sink=true", f"cluster.serving_image={images['serving']}",
                 f"project=sink-{uuid.uuid4().hex[:6]}"]
    cfg = load_config(REPO_ROOT / "kfops.yaml", overrides, environ={})
    deployment = render_log_sink(cfg, namespace="kfops-serving")[0]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    port = free_port()
    args = list(container["args"])
    args[args.index("--port") + 1] = str(port)  # the pod's network is the host's here
    args[args.index("--host") + 1] = "127.0.0.1"
    environment = {item["name"]: item["value"] for item in container["env"]}
    environment.update(profile.env)  # the S3 credentials and endpoint; a pod's come from its service account
    environment.pop("KFOPS__FEATURES__REDIS_PASSWORD")  # the sink needs no secret of the config
    name = f"kfops-test-sink-{uuid.uuid4().hex[:6]}"
    docker_engine._client().containers.run(
        image=container["image"], command=[*container["command"], *args], name=name, detach=True,
        environment=environment, network_mode="host", read_only=True, tmpfs={"/tmp": ""},
        labels={docker_engine.MANAGED_LABEL: "true"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/", 120)
        flight = {"carrier": "UA", "origin": "EWR", "dest": "IAH", "distance": 1400, "sched_dep": "2013-05-01T05:15"}
        answer = {"predictions": [{"probability": 0.62, "label": 1}], "model_name": "flights-delay",
                  "model_version": "7"}
        with httpx.Client(trust_env=False, timeout=30) as http:
            assert event(http, url, REQUEST_TYPE, "r1", {"instances": [flight]}).status_code == 202
            assert event(http, url, RESPONSE_TYPE, "r1", answer).status_code == 202
            assert http.get(url).json()["rows"] == 1
        docker_engine.stop(name, timeout_s=60)  # SIGTERM, as Kubernetes stops a pod: the sink writes what it holds
        state = docker_engine.container_state(name)
        assert state is not None and not state.running, docker_engine.logs(name)
    finally:
        logs = docker_engine.logs(name, tail=200)
        docker_engine.remove(name)
    assert "wrote s3://" in logs, logs
    for key, value in profile.env.items():
        monkeypatch.setenv(key, value)  # to read the log back here, as the drift job would
    logged = read_inference_logs(cfg.inference_log_location, dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    assert logged["request_id"].tolist() == ["r1"] and logged["probability"].tolist() == [0.62]
    assert logged["input_kind"].tolist() == ["raw"]  # told apart by the config's features, from the environment


# --- a project of the user's own, in its own images --------------------------------------------

SHOP_PIPELINE_IMAGE = "kfops-shop:local-test"
SHOP_SERVING_IMAGE = "kfops-shop-serving:local-test"


@pytest.fixture(scope="module")
def shop_in_containers(images, profile, tmp_path_factory):
    """`kfops init` on the shop tables, its raw files in the object store, its images built by
    `kfops build -c shop/kfops.yaml` on the kfops images, then `kfops run training --runner docker`."""
    import boto3

    from tests.support.shop_data import generate_shop

    work = tmp_path_factory.mktemp("shop-containers")
    generate_shop(work / "lake")
    env = {**os.environ, **profile.env, "KFOPS_PROGRESS": "plain"}
    env.pop("KFOPS_PROJECT_DIR", None)
    init = subprocess.run(
        [str(KFOPS), "init", "shop", "--table", "lake/orders.parquet:timestamp=ordered_at",
         "--table", "lake/customers.csv:timestamp=signup_at", "--table", "lake/stores.parquet",
         "--table", "lake/returns.csv:timestamp=returned_at", "--entity", "customer_id", "--entity", "store_id",
         "--label", "returned = returns within 30d on order_id"],
        cwd=work, env=env, capture_output=True, text=True, check=False, timeout=600)
    assert init.returncode == 0, init.stdout + init.stderr
    project = work / "shop"
    config = str(project / "kfops.yaml")
    # The model comes from a trainer of the project's own (docs/trainers.md): the serving image,
    # which has no scikit-learn, must load and run it from the project's files.
    shutil.copy(Path(__file__).resolve().parents[1] / "support" / "logistic_trainer.py", project)
    # The raw tables go to the object store: a pod reads them from there, not from this machine.
    bucket = next(o for o in profile.overrides if o.startswith("state.store=")).split("//")[1].split("/")[0]
    s3 = boto3.client("s3", endpoint_url=profile.env["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    for path in (work / "lake").iterdir():
        s3.upload_file(str(path), bucket, f"shop-lake/{path.name}")
    port = free_port()
    model_name = f"shop-containers-{uuid.uuid4().hex[:6]}"
    overrides = [
        f"data_dir={work / 'data'}", f"dataset.source_dir=s3://{bucket}/shop-lake",
        f"registry.model_name={model_name}", f"registry.experiment={model_name}",
        f"features.project=shop_{uuid.uuid4().hex[:8]}", f"serving.http_port={port}", "serving.startup_timeout_s=300",
        "train.trainer=logistic_trainer:LogisticTrainer", *profile.overrides,
    ]
    sets = [arg for item in overrides for arg in ("--set", item)]
    stock_run = subprocess.run([str(KFOPS), "run", "training", "--runner", "docker", "-c", config, *sets],
                               cwd=work, env=env, capture_output=True, text=True, check=False, timeout=600)
    logs_after_refusal = sorted((work / "data" / "logs").glob("*"))
    images_set = ["--set", f"cluster.image={SHOP_PIPELINE_IMAGE}", "--set", f"cluster.serving_image={SHOP_SERVING_IMAGE}"]
    build = subprocess.run(
        [str(KFOPS), "build", "-c", config, "--from", f"pipeline={images['pipeline']}",
         "--from", f"serving={images['serving']}", *images_set],
        cwd=work, env=env, capture_output=True, text=True, check=False, timeout=900)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    started = time.perf_counter()
    run = subprocess.run([str(KFOPS), "run", "training", "--runner", "docker", "-c", config, *sets, *images_set],
                         cwd=work, env=env, capture_output=True, text=True, check=False, timeout=1800)
    print(f"the shop's containerised training run: {time.perf_counter() - started:.0f} s")
    cfg = load_config(config, [*overrides, f"cluster.image={SHOP_PIPELINE_IMAGE}",
                               f"cluster.serving_image={SHOP_SERVING_IMAGE}"], environ={})
    stop = [str(KFOPS), "serve", "stop", "-c", config, *sets, *images_set]
    yield {"work": work, "stock_run": stock_run, "logs_after_refusal": logs_after_refusal, "build": build, "run": run,
           "cfg": cfg, "port": port, "stop": stop, "env": env}
    from kfops.serving.local.container import stop_server_container

    stop_server_container(cfg)


def test_a_project_in_kfops_own_images_is_refused_before_any_task_runs(shop_in_containers):
    stock_run = shop_in_containers["stock_run"]
    assert stock_run.returncode != 0
    message = stock_run.stderr
    assert "dataset.loader (shop_data)" in message and "kfops build -c" in message, message[-3000:]
    assert "train.trainer (logistic_trainer)" in message
    assert shop_in_containers["logs_after_refusal"] == []  # no task ran


def test_a_projects_image_holds_its_files_instead_of_the_examples(shop_in_containers):
    assert shop_in_containers["build"].returncode == 0
    listing = subprocess.run(
        ["docker", "run", "--rm", SHOP_PIPELINE_IMAGE, "sh", "-c",
         "id -u; find /opt/kfops -type f | sort; touch /opt/kfops/probe 2>/dev/null && echo WROTE-CODE-FOLDER; true"],
        capture_output=True, text=True, check=True, timeout=300).stdout.split()
    assert listing[0] == "1000"
    files = set(listing[1:])
    assert {"/opt/kfops/kfops.yaml", "/opt/kfops/shop_data.py", "/opt/kfops/logistic_trainer.py",
            "/opt/kfops/feature_repo/definitions.py",
            "/opt/kfops/expectations/orders.json", "/opt/kfops/expectations/training_set.json"} <= files
    assert "/opt/kfops/expectations/flights.json" not in files  # the example's suites are gone
    assert not any("/lake/" in f or "/.kfops/" in f for f in files)  # no raw data, no local state
    assert "WROTE-CODE-FOLDER" not in listing


def test_a_project_runs_in_its_own_images_reading_raw_files_from_the_object_store(shop_in_containers):
    run = shop_in_containers["run"]
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert "gate           BLESSED" in run.stdout
    (log,) = (shop_in_containers["work"] / "data" / "logs").glob("training-*.log")
    assert log.read_text().count(f"Found image '{SHOP_PIPELINE_IMAGE}'") == 8, log.read_text()[-3000:]  # 7 + training-end

    from kfops.adapters import mlflow_registry as registry

    cfg = shop_in_containers["cfg"]
    champion = registry.model_version(cfg, alias=registry.CHAMPION)
    assert champion is not None and str(champion.version) == "1"
    assert champion.tags["kfops.trainer"] == "logistic_trainer:LogisticTrainer"  # trained in the pipeline image

    from kfops.adapters import docker_engine
    from kfops.serving.local.container import container_name

    state = docker_engine.container_state(container_name(cfg))
    assert state is not None and state.running and state.image == SHOP_SERVING_IMAGE
    order = {"customer_id": "C0001", "store_id": "S01", "amount": 120.5, "category": "apparel", "channel": "web",
             "items": 2}
    url = f"http://127.0.0.1:{shop_in_containers['port']}/v1/models/{cfg.registry.model_name}:predict"
    response = httpx.post(url, json={"instances": [order]}, timeout=60, trust_env=False)
    assert response.status_code == 200, response.text
    assert 0.0 <= response.json()["predictions"][0]["probability"] <= 1.0

    # `kfops serve stop` stops the server the run started, a container here, not only a local process.
    stopped = subprocess.run(shop_in_containers["stop"], cwd=shop_in_containers["work"], env=shop_in_containers["env"],
                             capture_output=True, text=True, check=False, timeout=300)
    assert stopped.returncode == 0 and f"(container {container_name(cfg)})" in stopped.stdout, stopped.stdout
    assert docker_engine.container_state(container_name(cfg)) is None
