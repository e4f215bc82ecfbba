"""S3 adapter (boto3): the object-store calls kfops makes, against AWS or any S3-compatible server.

``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) points boto3 at another server; credentials
come from boto3's usual chain (environment, web identity on a cluster), never from kfops config.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b")``."""
    if not uri.startswith("s3://"):
        raise ValueError(f"'{uri}' is not an s3:// URI")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"'{uri}' names no bucket; use s3://<bucket>/<prefix>")
    return bucket, prefix.strip("/")


def s3_client() -> Any:
    import boto3

    return boto3.client("s3")


def put_object(bucket: str, key: str, body: bytes) -> None:
    """One object; S3 puts are atomic, so readers never see half of it."""
    s3_client().put_object(Bucket=bucket, Key=key, Body=body)


def list_keys(bucket: str, prefix: str) -> Iterator[str]:
    """Every key under ``prefix`` (a folder-like prefix: ``a/b`` lists ``a/b/...``)."""
    client = s3_client()
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
        for item in page.get("Contents", []):
            yield item["Key"]


def get_object(bucket: str, key: str) -> bytes:
    return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()


def upload_dir(local: Path, uri: str) -> int:
    """Copy every file under ``local`` to ``uri`` (``s3://bucket/prefix``), keeping relative paths."""
    bucket, prefix = split_s3_uri(uri)
    client = s3_client()
    count = 0
    for path in sorted(Path(local).rglob("*")):
        if path.is_file():
            key = "/".join(part for part in (prefix, path.relative_to(local).as_posix()) if part)
            client.upload_file(str(path), bucket, key)
            count += 1
    return count


def download_dir(uri: str, local: Path) -> int:
    """Copy every object under ``uri`` into ``local``, keeping relative paths; returns the count."""
    bucket, prefix = split_s3_uri(uri)
    client = s3_client()
    local = Path(local)
    count = 0
    for key in list_keys(bucket, prefix):
        relative = key[len(prefix) + 1:] if prefix else key
        if not relative or relative.endswith("/"):
            continue
        target = local / relative
        if local.resolve() not in target.resolve().parents:
            raise ValueError(f"object {key} would land outside {local}")
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, key, str(target))
        count += 1
    return count
