"""A dataset plug-in reads its raw tables from an object store as from a folder
(`kfops.datasets.read_table_file`), against moto's S3 server through boto3."""

from __future__ import annotations

import uuid

import pandas as pd
import pytest

from kfops.datasets import join_location, read_table_file
from kfops.errors import DataError
from tests.integration.conftest import S3_CLIENT_ENV

pytestmark = [pytest.mark.integration]


@pytest.fixture
def lake(s3_server, monkeypatch, tmp_path):
    import boto3

    for key, value in {**S3_CLIENT_ENV, "AWS_ENDPOINT_URL": s3_server}.items():
        monkeypatch.setenv(key, value)
    bucket = f"kfops-lake-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3")
    client.create_bucket(Bucket=bucket)
    frame = pd.DataFrame({"order_id": ["O1", "O2"], "amount": [12.5, 3.0],
                          "ordered_at": pd.to_datetime(["2024-01-01T10:00", "2024-01-02T11:30"], utc=True)})
    frame.to_parquet(tmp_path / "orders.parquet")
    frame.to_csv(tmp_path / "orders.csv", index=False)
    frame.to_csv(tmp_path / "orders.csv.gz", index=False)
    for name in ("orders.parquet", "orders.csv", "orders.csv.gz"):
        client.upload_file(str(tmp_path / name), bucket, f"raw/{name}")
    return {"prefix": f"s3://{bucket}/raw", "frame": frame, "local": tmp_path, "bucket": bucket, "s3": s3_server}


def test_a_raw_table_reads_the_same_from_the_object_store_as_from_a_folder(lake):
    for name in ("orders.parquet", "orders.csv", "orders.csv.gz"):
        remote = read_table_file(join_location(lake["prefix"], name))
        local = read_table_file(join_location(lake["local"], name))
        pd.testing.assert_frame_equal(remote, local)
    pd.testing.assert_frame_equal(read_table_file(join_location(lake["prefix"], "orders.parquet")), lake["frame"])


def test_a_missing_object_or_bucket_is_a_data_error_naming_it(lake):
    with pytest.raises(DataError, match=r"absent\.csv' does not exist"):
        read_table_file(join_location(lake["prefix"], "absent.csv"))
    with pytest.raises(DataError, match="no-such-bucket-kfops"):
        read_table_file("s3://no-such-bucket-kfops/raw/orders.csv")


def test_an_unreachable_object_store_is_a_data_error_naming_the_file(monkeypatch):
    from tests.conftest import free_port

    for key, value in {**S3_CLIENT_ENV, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}.items():
        monkeypatch.setenv(key, value)  # nothing listens there
    with pytest.raises(DataError, match=r"cannot read 's3://bucket/raw/orders\.csv'") as raised:
        read_table_file("s3://bucket/raw/orders.csv")
    assert "AWS_ENDPOINT_URL" in raised.value.hint


def test_kfops_init_scaffolds_from_tables_in_the_object_store(lake, tmp_path):
    """The tables never leave the bucket: init profiles them there, writes source_dir as the
    prefix, and its trial run of the plug-in (loader and entity builder) reads them from S3."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import boto3
    import yaml

    from tests.support.shop_data import generate_shop

    generate_shop(tmp_path / "lake", days=40, orders_per_day=40, customers=200)
    client = boto3.client("s3")
    for path in (tmp_path / "lake").iterdir():
        client.upload_file(str(path), lake["bucket"], f"shop/{path.name}")
    prefix = f"s3://{lake['bucket']}/shop"
    env = {**os.environ, "KFOPS_PROGRESS": "plain"}
    env.pop("KFOPS_PROJECT_DIR", None)
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(
        [str(Path(sys.executable).with_name("kfops")), "init", "shop",
         "--table", f"{prefix}/orders.parquet:timestamp=ordered_at", "--table", f"{prefix}/customers.csv:timestamp=signup_at",
         "--table", f"{prefix}/stores.parquet", "--table", f"{prefix}/returns.csv:timestamp=returned_at",
         "--entity", "customer_id", "--entity", "store_id", "--label", "returned = returns within 30d on order_id"],
        cwd=work, env=env, capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load((work / "shop" / "kfops.yaml").read_text())
    assert config["dataset"]["source_dir"] == prefix
    assert "view       customers by customer_id" in done.stdout
    assert f"on a cluster: kfops build -c {work / 'shop' / 'kfops.yaml'}" in done.stdout
    assert "    'orders': 'orders.parquet'," in (work / "shop" / "shop_data.py").read_text()
    assert not list(work.glob("**/*.parquet")) and not list(work.glob("**/*.csv"))  # nothing copied here
