"""Typed errors. Each message names the problem and, where there is one, the fix.

User errors (bad config, bad data) exit with code 2; infrastructure errors (a service that does
not answer) exit with code 3, so automation can tell them apart.
"""

from __future__ import annotations


class KfopsError(Exception):
    """Base class; ``hint`` is printed after the message on the CLI."""

    exit_code = 2
    hint: str | None = None

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class ConfigError(KfopsError):
    hint = "check kfops.yaml, KFOPS__* environment variables and --set overrides"


class DataError(KfopsError):
    """Input data is missing, unreadable or empty."""


class ValidationFailed(KfopsError):
    """A data contract was broken; carries the failing expectations."""

    def __init__(self, message: str, failures: list[dict] | None = None, summary_path: str | None = None):
        super().__init__(message, hint="see the validation report; fix the data or edit the suite in expectations/")
        self.failures = failures or []
        self.summary_path = summary_path


class TrainingError(KfopsError):
    pass


class GateRefused(KfopsError):
    """The evaluation gate did not bless the model."""


class RegistryError(KfopsError):
    exit_code = 3


class ServingError(KfopsError):
    exit_code = 3


class PipelineFailed(KfopsError):
    exit_code = 1
