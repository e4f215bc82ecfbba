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
    for name in ("orders.parquet", "orders.csv"):
        client.upload_file(str(tmp_path / name), bucket, f"raw/{name}")
    return {"prefix": f"s3://{bucket}/raw", "frame": frame, "local": tmp_path}


def test_a_raw_table_reads_the_same_from_the_object_store_as_from_a_folder(lake):
    for name in ("orders.parquet", "orders.csv"):
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
