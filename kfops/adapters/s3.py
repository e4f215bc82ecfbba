"""S3 adapter (boto3): the object-store calls kfops makes, against AWS or any S3-compatible server.

``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) points boto3 at another server; credentials
come from boto3's usual chain (environment, web identity on a cluster), never from kfops config.
Each call takes an optional ``client`` so a caller making many calls builds one client, not one each.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kfops.errors import DataError, ServiceUnavailable

# What S3 answers when a conditional write loses: the condition failed (412), or another
# conditional write to the key was in progress (409).
_CONDITION_LOST = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b")``."""
    if not uri.startswith("s3://"):
        raise ValueError(f"'{uri}' is not an s3:// URI")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"'{uri}' names no bucket; use s3://<bucket>/<prefix>")
    return bucket, prefix.strip("/")


# A dead or unreachable endpoint fails within about half a minute, not boto3's default of minutes
# (60 s connect timeout, retried); a read that stalls for a minute fails too.
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 60
MAX_ATTEMPTS = 3


def s3_client() -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                                            retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS}))


def put_object(bucket: str, key: str, body: bytes, client: Any = None) -> None:
    """One object; S3 puts are atomic, so readers never see half of it."""
    (client or s3_client()).put_object(Bucket=bucket, Key=key, Body=body)


def put_object_if(bucket: str, key: str, body: bytes, etag: str | None, client: Any = None) -> bool:
    """Put only if the object still has ``etag`` (None: only if there is no object yet).

    False when the condition fails: another writer changed or created the object first."""
    from botocore.exceptions import ClientError

    condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
    try:
        (client or s3_client()).put_object(Bucket=bucket, Key=key, Body=body, **condition)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in _CONDITION_LOST:
            return False
        raise
    return True


def list_keys(bucket: str, prefix: str, client: Any = None) -> Iterator[str]:
    """Every key under ``prefix`` (a folder-like prefix: ``a/b`` lists ``a/b/...``)."""
    client = client or s3_client()
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
        for item in page.get("Contents", []):
            yield item["Key"]


def get_object(bucket: str, key: str, client: Any = None) -> bytes:
    return (client or s3_client()).get_object(Bucket=bucket, Key=key)["Body"].read()


def read_uri(uri: str, client: Any = None) -> bytes:
    """The object at ``s3://bucket/key``; a :class:`DataError` naming it when it is missing or unreadable."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3_uri(uri)
    credentials = "check the AWS_* credentials and AWS_ENDPOINT_URL the task runs with"
    try:
        return get_object(bucket, key, client)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "NoSuchBucket", "404"):
            raise DataError(f"'{uri}' does not exist ({code})", hint="check the location's bucket and key") from err
        raise DataError(f"cannot read '{uri}': {code or err}", hint=credentials) from err
    except BotoCoreError as err:
        raise DataError(f"cannot read '{uri}': {err}", hint=credentials) from err


def get_object_versioned(bucket: str, key: str, client: Any = None) -> tuple[bytes | None, str | None]:
    """The object's bytes and ETag; ``(None, None)`` when there is no such key."""
    from botocore.exceptions import ClientError

    try:
        answer = (client or s3_client()).get_object(Bucket=bucket, Key=key)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None, None
        raise
    return answer["Body"].read(), answer["ETag"]


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


def fetch_dir(uri: str, local: Path) -> int:
    """:func:`download_dir` with S3's failures as kfops errors naming ``uri``: a refusal (no such
    bucket, access denied) is a DataError, an unreachable endpoint ServiceUnavailable."""
    from botocore.exceptions import BotoCoreError, ClientError

    credentials = "check the AWS_* credentials and AWS_ENDPOINT_URL this runs with"
    try:
        return download_dir(uri, local)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        raise DataError(f"cannot read '{uri}': {code or err}", hint=credentials) from err
    except BotoCoreError as err:
        raise ServiceUnavailable(f"cannot read '{uri}': {err}", hint=credentials) from err
