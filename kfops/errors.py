"""Typed errors. Each message names the problem and, where there is one, the fix.

Each kind of outcome has its own exit code, so automation can tell them apart (the table in
docs/troubleshooting.md lists them; keep it in step with these constants).
"""

from __future__ import annotations

from kfops.core.redaction import redact_uri

EXIT_OK = 0
"""Done: for `kfops run`, the gate blessed the model (or the run had nothing to judge)."""
EXIT_FAILED = 1
"""A pipeline task failed, or an unexpected error."""
EXIT_USAGE = 2
"""A user error: bad command line, configuration or input data (validation failed)."""
EXIT_INFRA = 3
"""Infrastructure: a registry, model server or cluster that failed or did not answer; a canary rolled back."""
EXIT_NOT_BLESSED = 4
"""The run finished but the evaluation gate refused the model: nothing was registered or deployed."""
EXIT_INTERRUPTED = 130
"""Ctrl-C (or the command was aborted)."""


HINT_NOTE = "hint: "
"""How a pipeline task's log shows a KfopsError's hint, on the line after its traceback
(:func:`install_hint_printer`), where `kfops run` reads it back."""


class KfopsError(Exception):
    """Base class; ``hint`` is printed after the message on the CLI.

    A password in a URI quoted by the message or hint (``postgresql://u:pw@db``, a wrapped
    MLflow error naming ``http://admin:pw@mlflow``) is replaced by ``***``: errors are shown.
    """

    exit_code = EXIT_USAGE
    hint: str | None = None

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(redact_uri(str(message)))
        if hint is not None:
            self.hint = redact_uri(hint)


class ConfigError(KfopsError):
    hint = "check kfops.yaml, KFOPS__* environment variables and --set overrides"


class MissingColumnsError(ConfigError):
    """The config names columns (row id, label, features, the gate's slices or behavioural checks)
    that the data lacks; ``missing`` maps each config key to the names it lacks. Raised before training."""

    hint = ("fix the names in kfops.yaml (dataset.*, features.*, evaluate.*) or the dataset's entity builder; "
            "an empty list turns a check off")

    def __init__(self, message: str, missing: dict[str, list[str]] | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.missing = missing or {}


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
    """The evaluation gate did not bless the model; not a failure, a decision (its own exit code)."""

    exit_code = EXIT_NOT_BLESSED


class RegistryError(KfopsError):
    exit_code = EXIT_INFRA


class ServingError(KfopsError):
    exit_code = EXIT_INFRA


class ServiceUnavailable(KfopsError):
    """A service kfops depends on (Redis, a database, an HTTP endpoint) could not be reached in time."""

    exit_code = EXIT_INFRA


class PipelineFailed(KfopsError):
    exit_code = EXIT_FAILED


def install_hint_printer() -> None:
    """Print a KfopsError's hint under the traceback of an error that ends the process (a pipeline
    task): the hint is not part of the exception's text, and `kfops run` shows it from the log."""
    import sys

    if getattr(sys.excepthook, "kfops_hints", False):
        return
    previous = sys.excepthook

    def print_with_hint(kind, value, traceback) -> None:
        previous(kind, value, traceback)
        if isinstance(value, KfopsError) and value.hint:
            print(f"{HINT_NOTE}{value.hint}", file=sys.stderr, flush=True)

    print_with_hint.kfops_hints = True  # type: ignore[attr-defined]
    sys.excepthook = print_with_hint
