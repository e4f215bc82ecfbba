"""Container images: how `kfops build` assembles what docker builds, and the images compiled YAML names.

The images themselves are built and run for real in tests/integration/test_containers.py; these
check the parts that need no engine: the role requirements taken from pyproject.toml, the build
context (what .dockerignore keeps out, the build-time pip settings), the loopback wheel mirror,
and the commands `kfops build --dry-run` prints.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tomllib
import urllib.request
from pathlib import Path

import yaml

from kfops.adapters.kfp_local import COMPONENTS, compile_pipeline
from kfops.cluster import images
from kfops.cluster.images import BuildOptions, HostPip, build_commands, images_in_pipeline
from kfops.config import ClusterConfig
from tests.support.example import example_config, write_example_config

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def role_requirements(role: str) -> list[str]:
    result = subprocess.run([sys.executable, "images/requirements.py", role], cwd=REPO, capture_output=True,
                            text=True, check=True)
    return result.stdout.split()


def names(requirements: list[str]) -> set[str]:
    import re

    return {re.match(r"[A-Za-z0-9._-]+", r).group(0) for r in requirements}


def test_serving_image_installs_no_training_stack():
    serving = role_requirements("serving")
    assert not names(serving) & {"torch", "great-expectations", "evidently", "kfp", "mlflow", "xgboost"}
    assert {"kserve", "mlflow-skinny", "xgboost-cpu", "redis"} <= names(serving)
    # The ranges are pyproject's own, renamed: mlflow-skinny takes mlflow's range.
    mlflow = next(r for r in PYPROJECT["project"]["dependencies"] if r.startswith("mlflow"))
    assert "mlflow-skinny" + mlflow.removeprefix("mlflow") in serving


def test_pipeline_image_keeps_every_dependency_with_cpu_xgboost():
    pipeline = role_requirements("pipeline")
    # kfops itself is installed without build isolation: its build backend comes along.
    build = PYPROJECT["build-system"]["requires"]
    assert len(pipeline) == len(PYPROJECT["project"]["dependencies"]) + len(build) and pipeline[-len(build):] == build
    assert "torch" in names(pipeline) and "xgboost-cpu" in names(pipeline) and "xgboost" not in names(pipeline)


def test_an_unknown_role_or_name_is_refused():
    result = subprocess.run([sys.executable, "images/requirements.py", "nope"], cwd=REPO, capture_output=True,
                            text=True, check=False)
    assert result.returncode != 0 and "unknown image role 'nope'" in result.stderr
    result = subprocess.run([sys.executable, "images/requirements.py", "serving", "torch"], cwd=REPO,
                            capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "installs no 'torch'" in result.stderr


def test_build_commands_tag_each_role_from_config_with_build_args():
    cluster = ClusterConfig(image="reg.example/kfops:7", gpu_image="reg.example/kfops-gpu:7",
                            serving_image="reg.example/kfops-serving:7")
    options = BuildOptions(base_image="kfops-base:bookworm", torch_index="")
    commands = build_commands(cluster, REPO, push=True, options=options)
    assert commands[0] == ["docker", "build", "--file", "Dockerfile", "--tag", "reg.example/kfops:7",
                           "--build-arg", "BASE_IMAGE=kfops-base:bookworm", "--build-arg", "TORCH_INDEX=",
                           str(REPO)]
    assert commands[1] == ["docker", "push", "reg.example/kfops:7"]
    # Serving installs no torch; the GPU image keeps its CUDA base.
    assert commands[2][:6] == ["docker", "build", "--file", "Dockerfile.serving", "--tag", "reg.example/kfops-serving:7"]
    assert "TORCH_INDEX=" not in commands[2]
    assert commands[4][3:6] == ["Dockerfile.gpu", "--tag", "reg.example/kfops-gpu:7"]
    assert "BASE_IMAGE=kfops-base:bookworm" not in commands[4]


def test_context_leaves_out_what_dockerignore_names_and_carries_pip_settings(tmp_path):
    data = images.context_tar(REPO, {"pip.conf": b"[global]\n"})
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert "Dockerfile" in members and "kfops/config.py" in members and "images/requirements.py" in members
        assert not [n for n in members if n.startswith((".git/", ".venv/", "tests/", ".kfops/")) or "__pycache__" in n]
        assert tar.extractfile("images/pip/pip.conf").read() == b"[global]\n"
    # A plain ustar header first: the docker CLI tells a context on stdin from a Dockerfile by its
    # first 512 bytes, which a PAX extended header (Python's default) spoils.
    assert data[257:262] == b"ustar" and data[156:157] == b"0"


def test_host_pip_settings_serve_local_folders_on_loopback(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "demo-1.0-py3-none-any.whl").write_bytes(b"wheel")
    index = tmp_path / "pypi" / "simple" / "demo"
    index.mkdir(parents=True)
    (index / "index.html").write_text('<a href="../../files/demo-1.0.whl">demo</a>')
    cert = tmp_path / "ca.pem"
    cert.write_text("CERT")
    host = HostPip(index_url=None, extra_index_urls=[(tmp_path / "pypi" / "simple").as_uri()],
                   find_links=[str(wheels), str(tmp_path / "missing")], cert=cert)
    with images._LoopbackMirror() as mirror:
        files = images.pip_settings_from_host(host, mirror)
        conf = files["pip.conf"].decode()
        assert files["ca.pem"] == b"CERT" and "cert = /etc/kfops-pip/ca.pem" in conf
        assert "trusted-host = 127.0.0.1" in conf and "missing" not in conf
        links = next(line for line in conf.splitlines() if line.startswith("find-links")).split(" = ")[1]
        extra = next(line for line in conf.splitlines() if line.startswith("extra-index-url")).split(" = ")[1]
        with urllib.request.urlopen(links + "demo-1.0-py3-none-any.whl") as response:
            assert response.read() == b"wheel"
        with urllib.request.urlopen(extra + "demo/") as response:
            assert b"../../files/demo-1.0.whl" in response.read()
        # Nothing outside the served folders: no path escapes.
        try:
            urllib.request.urlopen(links + "..%2F..%2Fca.pem")
            escaped = True
        except urllib.error.HTTPError:
            escaped = False
        assert not escaped


def test_build_dry_run_prints_the_commands(capsys, tmp_path):
    from kfops.cli import main

    try:
        main(["build", "--dry-run", "--context", str(REPO), "--set", "cluster.image=reg.example/k:1",
              "--set", f"data_dir={tmp_path}"])
    except SystemExit as exit_:
        assert exit_.code in (0, None)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("docker build --file Dockerfile --tag reg.example/k:1 ")
    assert "Dockerfile.serving" in out[1] and "--tag ghcr.io/kfops/kfops-serving:0.1.0" in out[1]
    assert "Dockerfile.gpu" in out[2] and "--tag ghcr.io/kfops/kfops-gpu:0.1.0" in out[2]


def test_checked_in_components_run_in_the_default_image():
    default = ClusterConfig().image
    for name in COMPONENTS:
        spec = yaml.safe_load((REPO / "components" / name / "component.yaml").read_text())
        assert set(images_in_pipeline(spec).values()) == {default}, name


def test_compiled_pipeline_uses_the_configured_images(tmp_path):
    cfg = example_config().model_copy(deep=True)
    cfg.cluster.image = "registry.example.com/kfops:42"
    cfg.cluster.gpu_image = "registry.example.com/kfops-gpu:42"
    spec = yaml.safe_load(compile_pipeline(cfg, "training", tmp_path / "cpu.yaml").read_text())
    images = images_in_pipeline(spec)
    training_steps = {"ingest", "validate", "featurize", "train", "evaluate", "register", "deploy", "training-end"}
    assert set(images) == {f"exec-{name}" for name in training_steps}
    assert set(images.values()) == {"registry.example.com/kfops:42"}
    retraining = yaml.safe_load(compile_pipeline(cfg, "retraining", tmp_path / "re.yaml").read_text())
    assert set(images_in_pipeline(retraining).values()) == {"registry.example.com/kfops:42"}

    cfg.cluster.gpus_per_node = 1
    spec = next(yaml.safe_load_all(compile_pipeline(cfg, "training", tmp_path / "gpu.yaml").read_text()))
    images = images_in_pipeline(spec)
    assert images.pop("exec-train") == "registry.example.com/kfops-gpu:42"
    assert set(images.values()) == {"registry.example.com/kfops:42"}


def test_pods_read_secrets_from_the_named_kubernetes_secret(tmp_path):
    """With cluster.secrets_name, every task that reads a store takes the KFOPS__ secret variables
    from that Secret (optional keys), and the compiled YAML holds the Secret's name, never a value.
    The retraining's window task reads none, and gets none."""
    from kfops.adapters.kfp_secrets import secret_variables
    from kfops.config import load_config

    planted = "planted-redis-password-4242"
    cfg = load_config(None, ["cluster.secrets_name=kfops-secrets", "features.online_store=redis"],
                      environ={"KFOPS__FEATURES__REDIS_PASSWORD": planted})
    for name in ("training", "retraining"):
        text = compile_pipeline(cfg, name, tmp_path / f"{name}.yaml").read_text()
        assert planted not in text
        platform = list(yaml.safe_load_all(text))[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        executors = next(yaml.safe_load_all(text))["deploymentSpec"]["executors"]
        assert set(platform) == set(executors) - {"exec-run-window"}, name  # every task that reads a store
        for spec in platform.values():
            (secret,) = spec["secretAsEnv"]
            assert secret["secretName"] == "kfops-secrets" and secret["optional"] is True
            assert {item["secretKey"] for item in secret["keyToEnv"]} == set(secret_variables())
    assert "KFOPS__FEATURES__REDIS_PASSWORD" in secret_variables()


def test_the_build_pip_settings_are_the_same_from_build_to_build(tmp_path, monkeypatch):
    """docker caches a layer by its inputs: a pip.conf naming a new mirror port each build would
    reinstall every dependency on every build."""
    from tests.conftest import free_port

    monkeypatch.setattr(images, "MIRROR_PORT", free_port())  # the fixed port, free (a build may hold the real one)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    host = HostPip(index_url=None, extra_index_urls=[], find_links=[str(wheels)], cert=None)
    confs = []
    for _ in range(2):
        with images._LoopbackMirror() as mirror:
            confs.append(images.pip_settings_from_host(host, mirror)["pip.conf"])
    assert confs[0] == confs[1]


def test_checked_in_role_requirements_are_current():
    """The Dockerfiles copy images/requirements/<role>.txt: they must say what pyproject.toml says."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("images_requirements", REPO / "images" / "requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for relative, text in module.rendered(PYPROJECT).items():
        path = REPO / relative
        assert path.is_file() and path.read_text() == text, f"{relative} is stale: run `python images/requirements.py --write`"


def test_the_documented_batch_scoring_pipeline_compiles_for_a_cluster(tmp_path, monkeypatch):
    """docs/deployment.md's nightly-scoring snippet, run as written: the predict component in the
    project's image, with the cluster Secret's variables and no secret value in the YAML."""
    import re

    text = (REPO / "docs" / "deployment.md").read_text()
    section = text.split("## Batch scoring in your own pipeline", 1)[1]
    (snippet,) = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], flags=re.S)
    planted = "planted-redis-password-777"
    write_example_config(tmp_path / "kfops.cluster.yaml", {
        "cluster": {"image": "registry.example.com/shop:7", "secrets_name": "shop-secrets"},
        "registry": {"tracking_uri": "http://mlflow.kubeflow.svc:5000"}, "features": {"online_store": "redis"}})
    (tmp_path / "components" / "predict").mkdir(parents=True)
    (tmp_path / "components" / "predict" / "component.yaml").write_text(
        (REPO / "components" / "predict" / "component.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KFOPS__FEATURES__REDIS_PASSWORD", planted)
    # dont_inherit: this module's postponed annotations would reach kfp as text, as they would not in a script
    exec(compile(snippet, "nightly_scoring.py", "exec", dont_inherit=True), {"__name__": "__main__"})
    compiled = (tmp_path / "nightly_scoring.yaml").read_text()
    assert planted not in compiled
    spec, platform = list(yaml.safe_load_all(compiled))
    assert images_in_pipeline(spec) == {"exec-predict": "registry.example.com/shop:7"}
    (secret,) = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-predict"]["secretAsEnv"]
    assert secret["secretName"] == "shop-secrets"
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {"rows_uri", "feast_sources_uri"}
    task_parameters = spec["root"]["dag"]["tasks"]["predict"]["inputs"]["parameters"]
    assert task_parameters["log_predictions"]["runtimeValue"]["constant"] is True
