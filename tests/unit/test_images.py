"""Container images: the Dockerfiles install the package, and compiled YAML names the configured images.

Docker cannot build here (no daemon on this machine), so the Dockerfiles are checked as text and
`kfops build` is checked in --dry-run mode; the compiled pipeline is checked for its images.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from kfops.adapters.kfp_local import COMPONENTS, compile_pipeline
from kfops.cluster.images import build_commands, images_in_pipeline
from kfops.config import ClusterConfig, KfopsConfig

REPO = Path(__file__).resolve().parents[2]
COPIED = ("pyproject.toml", "kfops", "components", "pipelines", "feature_repo", "expectations")


def _instructions(dockerfile: Path) -> list[str]:
    text = dockerfile.read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _check_installs_the_package(dockerfile: Path) -> list[str]:
    lines = _instructions(dockerfile)
    copies = [(i, line) for i, line in enumerate(lines) if line.startswith("COPY ")]
    install = next(i for i, line in enumerate(lines) if re.match(r"RUN pip install \.(\s|$)", line))
    for name in COPIED:
        where = [i for i, line in copies if re.search(rf"\b{re.escape(name)}\b", line.split()[1:-1].__str__())]
        assert where, f"{dockerfile.name} does not COPY {name}"
        assert min(where) < install, f"{dockerfile.name} copies {name} after `pip install .`"
    return lines


def test_cpu_dockerfile_installs_the_package_with_cpu_torch():
    lines = _check_installs_the_package(REPO / "Dockerfile")
    torch = [line for line in lines if "torch" in line and line.startswith("RUN pip install")]
    assert torch and all("download.pytorch.org/whl/cpu" in line for line in torch)


def test_gpu_dockerfile_installs_a_cuda_torch_build():
    lines = _check_installs_the_package(REPO / "Dockerfile.gpu")
    assert lines[0].startswith("FROM nvidia/cuda:")
    torch = [line for line in lines if "torch" in line and line.startswith("RUN pip install")]
    assert torch and all(re.search(r"download\.pytorch\.org/whl/cu\d+", line) for line in torch)


def test_build_commands_tag_both_images_from_config():
    cluster = ClusterConfig(image="registry.example.com/kfops:7", gpu_image="registry.example.com/kfops-gpu:7")
    commands = build_commands(cluster, REPO, push=True)
    assert commands == [
        ["docker", "build", "--file", str(REPO / "Dockerfile"), "--tag", "registry.example.com/kfops:7", str(REPO)],
        ["docker", "push", "registry.example.com/kfops:7"],
        ["docker", "build", "--file", str(REPO / "Dockerfile.gpu"), "--tag", "registry.example.com/kfops-gpu:7",
         str(REPO)],
        ["docker", "push", "registry.example.com/kfops-gpu:7"],
    ]
    assert [c[1] for c in build_commands(cluster, REPO)] == ["build", "build"]


def test_build_dry_run_prints_the_commands(capsys, tmp_path):
    from kfops.cli import main

    try:
        main(["build", "--dry-run", "--context", str(REPO), "--set", "cluster.image=reg.example/k:1",
              "--set", f"data_dir={tmp_path}"])
    except SystemExit as exit_:
        assert exit_.code in (0, None)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("docker build --file") and out[0].split("--tag ")[1].startswith("reg.example/k:1 ")
    assert "Dockerfile.gpu" in out[1] and "--tag ghcr.io/kfops/kfops-gpu:0.1.0" in out[1]


def test_checked_in_components_run_in_the_default_image():
    default = ClusterConfig().image
    for name in COMPONENTS:
        spec = yaml.safe_load((REPO / "components" / name / "component.yaml").read_text())
        assert set(images_in_pipeline(spec).values()) == {default}, name


def test_compiled_pipeline_uses_the_configured_images(tmp_path):
    cfg = KfopsConfig().model_copy(deep=True)
    cfg.cluster.image = "registry.example.com/kfops:42"
    cfg.cluster.gpu_image = "registry.example.com/kfops-gpu:42"
    spec = yaml.safe_load(compile_pipeline(cfg, "training", tmp_path / "cpu.yaml").read_text())
    images = images_in_pipeline(spec)
    training_steps = {"ingest", "validate", "featurize", "train", "evaluate", "register", "deploy"}
    assert set(images) == {f"exec-{name}" for name in training_steps}
    assert set(images.values()) == {"registry.example.com/kfops:42"}
    retraining = yaml.safe_load(compile_pipeline(cfg, "retraining", tmp_path / "re.yaml").read_text())
    assert set(images_in_pipeline(retraining).values()) == {"registry.example.com/kfops:42"}

    cfg.cluster.gpus_per_node = 1
    spec = next(yaml.safe_load_all(compile_pipeline(cfg, "training", tmp_path / "gpu.yaml").read_text()))
    images = images_in_pipeline(spec)
    assert images.pop("exec-train") == "registry.example.com/kfops-gpu:42"
    assert set(images.values()) == {"registry.example.com/kfops:42"}
