"""A project's own images (`kfops build -c project/kfops.yaml`) and the refusal to run a project in
kfops' own: which files the image carries, its tags and bases, and where raw files are read from.

The images are built and run for real in tests/integration/test_containers.py (the shop project,
its raw files on S3); these check what needs no engine.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from kfops.adapters.kfp_api import cluster_config_problems, project_image_problem
from kfops.cluster import project_image
from kfops.config import KfopsConfig, load_config, load_config_json
from kfops.datasets import join_location, read_table_file
from kfops.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]
KFOPS = str(Path(sys.executable).with_name("kfops"))
OWN_IMAGES = ["cluster.image=reg.example.com/acme:1", "cluster.serving_image=reg.example.com/acme-serving:1"]


def make_project(root: Path, extra_config: str = "") -> Path:
    """A project as `kfops init` lays one out, plus what must stay out of its image."""
    project = root / "acme"
    (project / "expectations").mkdir(parents=True)
    (project / "expectations" / "orders.json").write_text("{}")
    (project / "feature_repo").mkdir()
    (project / "feature_repo" / "definitions.py").write_text("def build(source_dir):\n    return []\n")
    (project / "acme_data.py").write_text("import acme_helpers\n\ndef load_tables(cfg):\n    return {}\n")
    (project / "acme_helpers").mkdir()
    (project / "acme_helpers" / "__init__.py").write_text("")
    (project / "raw").mkdir()
    (project / "raw" / "orders.csv").write_text("a\n1\n")
    # Not for the image: local state, caches, hidden files, notes, and what .dockerignore names.
    (project / ".kfops" / "mlflow").mkdir(parents=True)
    (project / ".kfops" / "mlflow" / "mlflow.db").write_text("state")
    (project / "__pycache__").mkdir()
    (project / "__pycache__" / "acme_data.cpython-311.pyc").write_bytes(b"\0")
    (project / ".env").write_text("AWS_SECRET_ACCESS_KEY=do-not-ship")
    (project / "notes.txt").write_text("not code")
    (project / "scratch.py").write_text("print('a scratch script')")
    (project / ".dockerignore").write_text("scratch.py\n")
    (project / "kfops.yaml").write_text(
        "project: acme\n"
        "data_dir: .kfops\n"
        "dataset:\n"
        "  loader: acme_data:load_tables\n"
        "  entity_builder: acme_data:load_tables\n"
        "  source_dir: raw\n"
        "validation:\n"
        "  suites_dir: expectations\n"
        "features:\n"
        "  repo_path: feature_repo\n" + extra_config)
    return project


def test_the_image_carries_the_projects_files_and_nothing_of_its_state(tmp_path):
    project = make_project(tmp_path)
    cfg = load_config(project / "kfops.yaml", environ={})
    files = project_image.project_files(cfg, project / "kfops.yaml")
    assert set(files) == {"kfops.yaml", "acme_data.py", "acme_helpers/__init__.py", "expectations/orders.json",
                          "feature_repo/definitions.py", "raw/orders.csv"}
    assert files["acme_data.py"] == project / "acme_data.py"


def test_a_config_of_another_name_is_the_images_kfops_yaml(tmp_path):
    project = make_project(tmp_path)
    (project / "kfops.yaml").rename(project / "prod.yaml")
    cfg = load_config(project / "prod.yaml", environ={})
    files = project_image.project_files(cfg, project / "prod.yaml")
    assert files["kfops.yaml"] == project / "prod.yaml" and "prod.yaml" not in files


def test_raw_data_outside_the_project_or_in_an_object_store_stays_out(tmp_path):
    project = make_project(tmp_path)
    outside = tmp_path / "lake"
    outside.mkdir()
    for source in (str(outside), "s3://bucket/lake"):
        cfg = load_config(project / "kfops.yaml", [f"dataset.source_dir={source}"], environ={})
        assert not any(name.startswith("raw/") for name in project_image.project_files(cfg, project / "kfops.yaml"))


@pytest.mark.parametrize(("key", "value", "says"), [
    ("validation.suites_dir", "../elsewhere", "outside the project folder"),
    ("features.repo_path", "missing_folder", "is not a folder of the project"),
])
def test_a_project_path_the_image_cannot_carry_is_refused_naming_the_key(tmp_path, key, value, says):
    project = make_project(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    cfg = load_config(project / "kfops.yaml", [f"{key}={value}"], environ={})
    with pytest.raises(ConfigError, match=key) as raised:
        project_image.project_files(cfg, project / "kfops.yaml")
    assert says in str(raised.value)


def test_the_context_holds_a_dockerfile_on_the_kfops_image_and_root_owned_read_only_files(tmp_path):
    project = make_project(tmp_path)
    cfg = load_config(project / "kfops.yaml", OWN_IMAGES, environ={})
    files = project_image.project_files(cfg, project / "kfops.yaml")
    text = project_image.dockerfile(cfg, "pipeline")
    with tarfile.open(fileobj=io.BytesIO(project_image.context_tar(files, text))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile("Dockerfile").read().decode() == text
        assert tar.extractfile("project/acme_data.py").read() == (project / "acme_data.py").read_bytes()
    assert set(members) == {"Dockerfile", *(f"project/{name}" for name in files)}
    assert all(m.uid == 0 and m.mode == 0o644 for m in members.values())
    assert "FROM ${KFOPS_IMAGE}" in text and "COPY project/ /opt/kfops/" in text
    # The example's files go, kfops' own pipeline sources stay; the image runs as its user again.
    assert "find /opt/kfops -mindepth 1 -maxdepth 1 ! -name pipelines ! -name components -exec rm -rf" in text
    assert text.rstrip().endswith("USER 1000:1000")


def test_builds_take_the_projects_tags_on_kfops_images_and_refuse_kfops_own_tags(tmp_path):
    project = make_project(tmp_path)
    cfg = load_config(project / "kfops.yaml", OWN_IMAGES, environ={})
    stock = project_image.stock_images()
    pipeline, serving = project_image.project_builds(cfg)
    assert (pipeline.tag, pipeline.base) == ("reg.example.com/acme:1", stock["pipeline"])
    assert (serving.tag, serving.base) == ("reg.example.com/acme-serving:1", stock["serving"])
    (local,) = project_image.project_builds(cfg, ("pipeline",), {"pipeline": "kfops:dev"})
    assert local.build_command() == ["docker", "build", "--build-arg", "KFOPS_IMAGE=kfops:dev",
                                     "--tag", "reg.example.com/acme:1", "-"]
    with pytest.raises(ConfigError, match=r"cluster.serving_image is .*kfops. own serving image"):
        project_image.project_builds(load_config(project / "kfops.yaml", OWN_IMAGES[:1], environ={}))
    with pytest.raises(ConfigError, match="unknown image role"):
        project_image.project_builds(cfg, ("pipeline",), {"pipelin": "kfops:dev"})


def test_kfops_build_of_a_project_prints_its_files_and_commands(tmp_path):
    project = make_project(tmp_path)
    sets = [arg for item in OWN_IMAGES for arg in ("--set", item)]
    result = subprocess.run([KFOPS, "build", "-c", str(project / "kfops.yaml"), "--dry-run", *sets,
                             "--from", "serving=kfops-serving:dev"],
                            cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "project acme" in result.stdout and "6 files go to /opt/kfops" in result.stdout
    assert "#   acme_helpers/__init__.py" in result.stdout and ".env" not in result.stdout
    assert "--build-arg KFOPS_IMAGE=kfops-serving:dev --tag reg.example.com/acme-serving:1 -" in result.stdout
    refused = subprocess.run([KFOPS, "build", "-c", str(project / "kfops.yaml"), "--dry-run"],
                             cwd=tmp_path, capture_output=True, text=True, check=False)
    assert refused.returncode != 0 and "cluster.image is ghcr.io/kfops/kfops" in refused.stderr


def test_the_repositorys_own_build_is_unchanged_by_a_project_build():
    result = subprocess.run([KFOPS, "build", "--dry-run", "--role", "pipeline"], cwd=REPO,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "--file Dockerfile" in result.stdout and "project" not in result.stdout


def test_a_cluster_run_of_a_project_in_kfops_own_images_is_refused(tmp_path):
    project = make_project(tmp_path)
    cfg = load_config(project / "kfops.yaml", environ={})
    problem = project_image_problem(cfg)
    assert problem is not None and problem in cluster_config_problems(cfg)
    assert "dataset.loader (acme_data), dataset.entity_builder (acme_data)" in problem
    assert "kfops build -c" in problem
    assert project_image_problem(load_config(project / "kfops.yaml", OWN_IMAGES, environ={})) is None
    # The example's plug-ins are installed with kfops, so kfops' own images hold them.
    assert project_image_problem(load_config(REPO / "kfops.yaml", environ={})) is None


def test_a_raw_table_is_read_from_a_folder_and_a_bad_location_is_named(tmp_path):
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    assert read_table_file(join_location(tmp_path, "t.csv")).equals(frame)
    assert read_table_file(join_location(str(tmp_path), "t.parquet")).equals(frame)
    assert join_location("s3://bucket/lake/", "sub/t.csv") == "s3://bucket/lake/sub/t.csv"
    frame.to_csv(tmp_path / "t.csv.gz", index=False)
    assert read_table_file(tmp_path / "t.csv.gz").equals(frame)
    with pytest.raises(DataError, match=r"missing\.csv. does not exist"):
        read_table_file(tmp_path / "missing.csv")
    with pytest.raises(DataError, match=r"only \.parquet, \.csv, \.csv\.gz, \.csv\.zip files"):
        read_table_file(tmp_path / "t.xlsx")
    with pytest.raises(ConfigError, match="local folders and s3:// only"):
        read_table_file("gs://bucket/t.csv")


def test_an_object_store_source_stays_a_uri_through_resolve_and_portable(tmp_path):
    (tmp_path / "kfops.yaml").write_text("project: p\n")
    cfg = load_config(tmp_path / "kfops.yaml", ["dataset.source_dir=s3://bucket/lake"], environ={})
    assert cfg.dataset.source_dir == "s3://bucket/lake"
    assert cfg.portable().dataset.source_dir == "s3://bucket/lake"
    assert cfg.resolve_at_run_time({}).dataset.source_dir == "s3://bucket/lake"
    # A compiled pipeline carries the config as JSON, which each task reads back.
    for source, expected in (("s3://bucket/lake", "s3://bucket/lake"), ("raw", Path("raw"))):
        carried = load_config(tmp_path / "kfops.yaml", [f"dataset.source_dir={source}"], environ={}).portable()
        assert load_config_json(carried.model_dump_json(), environ={}).dataset.source_dir == expected
        assert KfopsConfig.from_json(carried.model_dump_json()).dataset.source_dir == expected  # a task's read
    local = load_config(tmp_path / "kfops.yaml", ["dataset.source_dir=raw"], environ={})
    assert local.dataset.source_dir == tmp_path / "raw" and local.portable().dataset.source_dir == Path("raw")
    assert not any("source_dir" in p for p in cluster_config_problems(cfg))
