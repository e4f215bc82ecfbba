"""Credentials in URIs and connection strings: hide them where text is shown, drop them where it is kept.

Two kinds of credential hide in the strings kfops handles:

- the ``user:password@`` of a URI (``postgresql://postgres:pw@db/mlflow``, ``http://admin:pw@mlflow``);
- the ``password=`` option of a Feast Redis connection string (``host:6379,password=pw,ssl=true``).

:func:`redact_uri` is for anything printed, logged or raised: it replaces each password with
``***`` anywhere in a piece of text, so a message that quotes a URI (an error from MLflow,
say) is safe to show. :func:`strip_password` is for a value that is kept or sent on (a config
serialised into a pipeline): it removes the password, so what remains is still a valid URI
that names the same store, and the password comes back from the environment where it runs.
Pure functions, standard library only.
"""

from __future__ import annotations

import re

MASK = "***"
# scheme://user:password@ ; the user part has no '/', '@' or ':'; the password runs to the last '@'
# before the host: RFC 3986 wants '@' percent-encoded there, but people write it raw, and a mask
# that stops at the first '@' would show the rest of the password.
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:'\"]*):(?P<password>[^\s/'\"]*)@")
# password=... in a Redis connection string, to the next comma (or quote, or whitespace).
_REDIS_PASSWORD = re.compile(r"(?P<head>(?:^|,)\s*password=)(?P<password>[^,\s'\"]*)", re.IGNORECASE)


def redact_uri(text: str) -> str:
    """``text`` with every password in a URI or Redis connection string replaced by ``***``.

    >>> redact_uri("postgresql+psycopg2://postgres:s3cret@db:5432/mlflow")
    'postgresql+psycopg2://postgres:***@db:5432/mlflow'
    >>> redact_uri("cannot reach http://admin:pw@mlflow:5000/api: refused")
    'cannot reach http://admin:***@mlflow:5000/api: refused'
    >>> redact_uri("redis:6379,password=pw,ssl=true")
    'redis:6379,password=***,ssl=true'
    >>> redact_uri("http://admin:Top@Secret@mlflow:5000/api/x@y")
    'http://admin:***@mlflow:5000/api/x@y'
    """
    if not text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _REDIS_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)


def strip_password(value: str) -> str:
    """``value`` without its password: the URI keeps its user, a Redis string loses its ``password=``.

    >>> strip_password("postgresql://postgres:s3cret@db/mlflow")
    'postgresql://postgres@db/mlflow'
    >>> strip_password("redis:6379,password=pw,ssl=true")
    'redis:6379,ssl=true'
    """
    if not value:
        return value
    value = _USERINFO.sub(lambda m: f"{m['head']}@", value)
    if not _REDIS_PASSWORD.search(value):
        return value
    return ",".join(part for part in value.split(",") if not part.strip().lower().startswith("password="))


_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|CREDENTIAL|(^|_)KEY$|_KEY_|ACCESS_KEY", re.IGNORECASE)


def redact_env(name: str | None, value: object) -> str:
    """An environment variable's value as it may be shown: masked whole when its name says
    it is a secret (``*PASSWORD*``, ``*TOKEN*``, ``*SECRET*``, ``*_KEY``), else with any URI password masked.

    >>> redact_env("KFOPS__FEATURES__REDIS_PASSWORD", "pw")
    '***'
    >>> redact_env("KFOPS__REGISTRY__TRACKING_URI", "http://a:pw@h")
    'http://a:***@h'
    """
    if name and _SECRET_NAME.search(name):
        return MASK
    return redact_uri("" if value is None else str(value))


def has_password(value: str | None) -> bool:
    """Whether ``value`` carries a password that :func:`strip_password` would remove."""
    return bool(value) and strip_password(value) != value  # type: ignore[arg-type]


_REDACTING = {"installed": False}


def install_log_redaction() -> None:
    """Mask passwords in every log record this process emits, its traceback included.

    A URI with a password reaches log records in library messages and in the exceptions they chain
    (MLflow quotes the whole request URL), and a formatter prints a traceback as it is; so the
    record factory renders and redacts message and traceback once, when the record is made, and
    every handler (KServe's, uvicorn's, the CLI's) prints the masked text. Idempotent.
    """
    import logging
    import traceback

    if _REDACTING["installed"]:
        return
    make = logging.getLogRecordFactory()

    def redacted_record(*args: object, **kwargs: object) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the formatter to report
            return record
        record.msg, record.args = redact_uri(message), None
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            record.exc_text = redact_uri("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        if record.stack_info:
            record.stack_info = redact_uri(record.stack_info)
        return record

    logging.setLogRecordFactory(redacted_record)
    _REDACTING["installed"] = True
