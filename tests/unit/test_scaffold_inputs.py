"""`kfops init` on a user's own tables, as they come: unknown labels, clashing names, sub-second
events, keys of two types, integer ids and ordinary mistakes. Each table is made here, small."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kfops.config import load_config
from kfops.core.files import import_callable
from kfops.datasets.scaffold import InitSpec, parse_label, parse_table, scaffold
from kfops.datasets.scaffold.profile import profile_table
from kfops.errors import ConfigError, DataError


def snapshots(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    """Customers' monthly snapshots with a churn outcome, 'yes' / 'no', and every 20th unknown."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    frame = pd.DataFrame({
        "customer_id": [f"C{i:03d}" for i in rng.integers(0, 80, rows)],
        "snapshot_at": start + pd.to_timedelta(np.sort(rng.uniform(0, 60 * 86400, rows)).round(0), unit="s"),
        "plan": rng.choice(["basic", "pro"], rows),
        "tenure": rng.integers(1, 60, rows),
    })
    churn = np.where(rng.random(rows) < 0.3, "yes", "no").astype(object)
    churn[::20] = None
    frame["churn"] = churn
    return frame


def snapshot_spec(folder: Path, frame: pd.DataFrame, label: str, **changes) -> InitSpec:
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / "snapshots.parquet", index=False)
    values = {"tables": [parse_table(f"{folder}/snapshots.parquet:timestamp=snapshot_at")],
              "entities": ["customer_id"], "label": parse_label(label)}
    return InitSpec(**{**values, **changes})


def entity_frame(done) -> pd.DataFrame:
    cfg = load_config(done.target / "kfops.yaml", environ={})
    tables = import_callable(f"{done.module}:load_tables", search_path=done.target)(cfg)
    return import_callable(f"{done.module}:build_entity_frame", search_path=done.target)(tables, cfg)


def plugin_function(done, name: str):
    return import_callable(f"{done.module}:{name}", search_path=done.target)


# --- 1. a null label is unknown, not 0 ---------------------------------------------------------------


def test_an_unknown_label_leaves_the_event_out_rather_than_make_it_a_0(tmp_path, capsys):
    frame = snapshots()
    done = scaffold(snapshot_spec(tmp_path / "lake", frame, "churned = churn == 'yes'"), tmp_path / "p")
    unknown = int(frame["churn"].isna().sum())
    assert done.rows == len(frame) - unknown and done.unknown_labels == unknown
    assert done.label_rate == pytest.approx((frame["churn"] == "yes").sum() / (len(frame) - unknown))
    assert f"left out {unknown:,} of {len(frame):,} events whose label is unknown" in capsys.readouterr().out
    assert f"({unknown} events with an unknown label left out)" in (done.target / "kfops.yaml").read_text()
    # At run time the plug-in does the same, and says so.
    built = entity_frame(done)
    assert len(built) == len(frame) - unknown and str(built["churned"].dtype) == "int64"
    assert f"left out {unknown:,} of" in capsys.readouterr().out


@pytest.mark.parametrize("dtype", ["boolean", "object"])
def test_a_boolean_label_with_nulls_is_taken_as_is(tmp_path, dtype):
    frame = snapshots()
    frame["is_churn"] = frame.pop("churn").map({"yes": True, "no": False, None: None}).astype(dtype)
    done = scaffold(snapshot_spec(tmp_path / "lake", frame, "churned = is_churn"), tmp_path / "p")
    assert done.unknown_labels == int(frame["is_churn"].isna().sum()) > 0
    assert done.forbidden == ["is_churn"] and 0 < done.label_rate < 1


def later_tables(order_ids: list, return_ids: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Orders by 30 customers, and returns of a third of them within 30 days, with a reason."""
    rng = np.random.default_rng(5)
    rows = len(order_ids)
    ordered = pd.Timestamp("2024-03-01", tz="UTC") + pd.to_timedelta(np.arange(rows) * 3600 * 7, unit="s")
    orders = pd.DataFrame({"order_id": order_ids, "customer_id": [f"C{i % 30}" for i in range(rows)],
                           "ordered_at": ordered, "amount": rng.gamma(2, 30, rows).round(2)})
    back = np.arange(rows) % 3 == 0
    returns = pd.DataFrame({"order_id": [r for r, b in zip(return_ids, back, strict=True) if b],
                            "returned_at": ordered[back] + pd.Timedelta(days=5),
                            "reason": rng.choice(["size", "damaged"], int(back.sum()))})
    return orders, returns


def later_spec(folder: Path, orders: pd.DataFrame, returns: pd.DataFrame, label: str) -> InitSpec:
    folder.mkdir(parents=True, exist_ok=True)
    orders.to_parquet(folder / "orders.parquet", index=False)
    returns.to_parquet(folder / "returns.parquet", index=False)
    return InitSpec(tables=[parse_table(f"{folder}/orders.parquet:timestamp=ordered_at"),
                            parse_table(f"{folder}/returns.parquet:timestamp=returned_at")],
                    entities=["customer_id"], label=parse_label(label))


def test_a_later_label_is_unknown_for_a_null_key_or_a_row_that_may_count(tmp_path):
    ids = [f"O{i}" for i in range(300)]
    done = scaffold(later_spec(tmp_path / "lake", *later_tables(ids, ids),
                               "returned = returns where reason != 'size' within 30d on order_id"), tmp_path / "p")
    assert 0 < done.label_rate < 1
    at = pd.Timestamp("2024-05-01", tz="UTC")
    events = pd.DataFrame({"order_id": ["sure", None, "unsure", "both", "none", "no_time", "size"],
                           "ordered_at": [at] * 7})
    day = pd.Timedelta(days=1)
    returns = pd.DataFrame({
        "order_id": ["sure", None, "unsure", "both", "both", "no_time", "size"],
        "returned_at": [at + day, at + day, at + day, at + day, at + 2 * day, pd.NaT, at + day],
        "reason": ["damaged", "damaged", None, None, "damaged", "damaged", "size"],
    })
    label = plugin_function(done, "label")(events, {"orders": events, "returns": returns})
    assert [None if pd.isna(v) else int(v) for v in label] == [1, None, None, 1, 0, None, 0]
    assert done.unknown_labels == 0  # the generated orders all have a key and every return a reason


# --- 2. a label named like the column it comes from --------------------------------------------------


def test_a_label_named_like_an_outcome_column_is_refused_before_writing(tmp_path):
    with pytest.raises(ConfigError, match="label's name 'churn' is also the column its condition reads") as raised:
        scaffold(snapshot_spec(tmp_path / "lake", snapshots(), "churn = churn == 'yes'"), tmp_path / "p")
    assert "--label \"churned = churn == 'yes'\"" in raised.value.hint
    ids = [f"O{i}" for i in range(300)]
    with pytest.raises(ConfigError, match="label's name 'reason' is also an outcome"):
        scaffold(later_spec(tmp_path / "later", *later_tables(ids, ids), "reason = returns within 30d"),
                 tmp_path / "p")
    with pytest.raises(ConfigError, match="label's name 'plan' is also a column of 'snapshots'"):
        scaffold(snapshot_spec(tmp_path / "lake", snapshots(), "plan = churn == 'yes'"), tmp_path / "p")
    assert not (tmp_path / "p").exists()


# --- 3. the made row id ----------------------------------------------------------------------------


def test_a_made_row_id_is_unique_for_events_of_a_key_within_one_second(tmp_path):
    frame = snapshots()
    second = frame["snapshot_at"].iloc[5]
    # Two more events of the customer in that second: 300 ms later, and 400 ns after that.
    twins = frame.iloc[[5, 5]].assign(snapshot_at=[second + pd.Timedelta(milliseconds=300),
                                                   second + pd.Timedelta(milliseconds=300, nanoseconds=400)])
    frame = pd.concat([frame, twins]).sort_values("snapshot_at", kind="stable").reset_index(drop=True)
    done = scaffold(snapshot_spec(tmp_path / "lake", frame, "churned = churn == 'yes'"), tmp_path / "p")
    ids = entity_frame(done)["row_id"]
    assert ids.is_unique
    made = f"{frame['customer_id'].iloc[5]}_{second:%Y%m%dT%H%M%S}"
    assert {f"{made}000000_0", f"{made}300000_0", f"{made}300000_1"} <= set(ids)
    # Whole seconds keep the short form: <keys>_<time>_<n>.
    whole = scaffold(snapshot_spec(tmp_path / "lake2", snapshots(), "churned = churn == 'yes'"), tmp_path / "q")
    assert entity_frame(whole)["row_id"].str.fullmatch(r"C\d{3}_\d{8}T\d{6}_\d+").all()


# --- 4. ordinary mistakes: a clear error, and nothing left behind ------------------------------------


@pytest.mark.parametrize(("label", "error", "message", "hint"), [
    ("fraud = Is Fraud == 1", ConfigError, "does not run on 'snapshots': SyntaxError",
     "backticks: --label \"fraud = `Is Fraud` == 1\""),
    ("churned = churn", ConfigError, "gives values such as '(yes|no)' on 'snapshots', not true/false", "churn == '"),
    ("churned = tenure > 0", DataError, "100% positive", "check the label"),  # fails only once the plug-in ran
])
def test_an_init_mistake_is_a_clear_error_that_leaves_nothing_behind(tmp_path, label, error, message, hint):
    frame = snapshots().assign(**{"Is Fraud": lambda f: (f["churn"] == "yes").astype(int)})
    spec = snapshot_spec(tmp_path / "lake", frame, label)
    with pytest.raises(error, match=message) as raised:
        scaffold(spec, tmp_path / "new" / "p")
    assert hint in raised.value.hint
    assert not (tmp_path / "new").exists() and os.listdir(tmp_path) == ["lake"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(error):
        scaffold(spec, tmp_path / "empty")
    assert os.listdir(tmp_path / "empty") == []
    # Mended, the same command writes the project.
    spec.label = parse_label("churned = `Is Fraud` == 1")
    assert scaffold(spec, tmp_path / "empty").target == tmp_path / "empty"


def test_a_missing_table_file_is_named_with_a_hint_about_the_path_given_to_table(tmp_path, monkeypatch):
    """The hint was read_table_file's 'check dataset.source_dir', which init has not written yet."""
    monkeypatch.chdir(tmp_path)
    spec = InitSpec(tables=[parse_table("lake/orders.parquet:timestamp=ordered_at")], entities=["customer_id"],
                    label=parse_label("big = amount > 100"))
    with pytest.raises(DataError, match=r"raw table file 'lake/orders.parquet' does not exist") as raised:
        scaffold(spec, tmp_path / "shop")
    hint = raised.value.hint or ""
    assert "dataset.source_dir" not in hint
    assert f"relative to the current folder ({tmp_path})" in hint and str(tmp_path / "lake" / "orders.parquet") in hint
    assert os.listdir(tmp_path) == []


def test_label_keys_of_two_types_match_when_unambiguous_else_are_named(tmp_path):
    texts = [f"O{i}" for i in range(300)]
    baseline = scaffold(later_spec(tmp_path / "a", *later_tables(texts, texts), "returned = returns within 30d"),
                        tmp_path / "pa")
    numbers = list(range(1000, 1300))
    # An integer order_id in the orders, the same numbers as zero-padded digits in the returns: matched.
    done = scaffold(later_spec(tmp_path / "b", *later_tables(numbers, [f"{n:06d}" for n in numbers]),
                               "returned = returns within 30d"), tmp_path / "pb")
    assert (done.rows, done.label_rate) == (baseline.rows, baseline.label_rate)
    with pytest.raises(DataError, match=r"label key 'order_id' is int64 in 'orders' \(e.g. 1000\) but object in "
                                        r"'returns' \(e.g. 'R1000'\)") as raised:
        scaffold(later_spec(tmp_path / "c", *later_tables(numbers, [f"R{n}" for n in numbers]),
                            "returned = returns within 30d"), tmp_path / "pc")
    assert "one type in both tables" in raised.value.hint and not (tmp_path / "pc").exists()


# --- 5. an integer id is not a feature --------------------------------------------------------------


def test_a_near_unique_integer_id_is_no_feature(tmp_path):
    frame = snapshots()
    counter = np.arange(len(frame))
    counter[[10, 50, 90]] = counter[[9, 49, 89]]  # a few duplicates: not unique, so no row id either
    frame["transaction_id"] = counter
    frame["seq"] = counter  # not named as an id, but counts up down the table
    frame["amount_cents"] = np.random.default_rng(1).permutation(len(frame)) * 7 + 100  # near-unique, a number
    done = scaffold(snapshot_spec(tmp_path / "lake", frame, "churned = churn == 'yes'"), tmp_path / "p")
    assert done.request_features == ["plan", "tenure", "amount_cents"]
    assert done.row_id == "row_id"
    shuffled = np.random.default_rng(2).permutation(counter)
    columns = profile_table("t", pd.DataFrame({"Transaction ID": shuffled, "orderId": shuffled, "paid": shuffled,
                                               "items": np.arange(len(frame)) % 5})).columns
    assert [name for name, item in columns.items() if item.id_like] == ["Transaction ID", "orderId"]
    assert not profile_table("t", pd.DataFrame({"size_sqm": [80, 90, 120, 400]})).columns["size_sqm"].id_like


@pytest.mark.slow  # runs the CLI in a subprocess
def test_kfops_init_prints_a_mistake_and_the_unknown_labels(tmp_path):
    snapshot_spec(tmp_path / "lake", snapshots().assign(**{"Is Fraud": 0}), "x = churn == 'yes'")
    kfops = str(Path(sys.executable).with_name("kfops"))

    def init(label: str) -> subprocess.CompletedProcess:
        return subprocess.run([kfops, "init", "p", "--table", "lake/snapshots.parquet:timestamp=snapshot_at",
                               "--entity", "customer_id", "--label", label],
                              capture_output=True, text=True, cwd=tmp_path, timeout=300)

    failed = init("fraud = Is Fraud == 1")
    assert failed.returncode == 2 and "unexpected" not in failed.stderr, failed.stderr
    assert "error: the label condition 'Is Fraud == 1' does not run" in failed.stderr
    assert "backticks" in failed.stderr and not (tmp_path / "p").exists()
    done = init("churned = churn == 'yes'")
    assert done.returncode == 0, done.stderr
    assert "kfops: snapshots: left out 20 of 400 events whose label is unknown" in done.stdout


def test_events_without_a_time_say_why_one_is_needed_and_which_column_could_be_it(tmp_path):
    """'cannot tell which table holds the events: candidates none' for a table given without
    ':timestamp=', though a column of times was right there; and nothing about why kfops needs one."""
    frame = snapshots().assign(exported=lambda f: f["snapshot_at"].dt.strftime("%Y-%m-%d %H:%M:%S"))
    spec = snapshot_spec(tmp_path / "lake", frame, "churned = churn == 'yes'")
    spec.tables = [parse_table(f"{tmp_path}/lake/snapshots.parquet")]  # no timestamp named
    with pytest.raises(ConfigError, match="no --table names a timestamp, and the events need one: kfops splits "
                                          "train, validation and test by when events happened") as raised:
        scaffold(spec, tmp_path / "p")
    assert raised.value.hint == (f"--table {tmp_path}/lake/snapshots.parquet:timestamp=snapshot_at or "
                                 f"--table {tmp_path}/lake/snapshots.parquet:timestamp=exported")
    spec.events = "snapshots"
    with pytest.raises(ConfigError, match="the events table 'snapshots' needs a timestamp: kfops splits"):
        scaffold(spec, tmp_path / "p")
    untimed = snapshot_spec(tmp_path / "lake2", frame.drop(columns=["snapshot_at", "exported"]), "churned = churn == 'yes'")
    untimed.tables = [parse_table(f"{tmp_path}/lake2/snapshots.parquet")]
    with pytest.raises(ConfigError) as raised:
        scaffold(untimed, tmp_path / "p")
    assert raised.value.hint.startswith("'snapshots' has no column of times")


def test_kfops_init_prints_what_it_made_of_the_data(tmp_path, capsys, monkeypatch):
    """Each thing init decided about the data is a line on the terminal, not only a field of the plan:
    zero-padded codes kept as text, columns that are no feature, a table that gives none, a key
    twice in a view's table, and infinite values."""
    from kfops.cli import main

    rng = np.random.default_rng(4)
    rows = 300
    lake = tmp_path / "lake"
    lake.mkdir()
    at = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.sort(rng.uniform(0, 60 * 86400, rows)), unit="s")
    pd.DataFrame({"visit_id": range(rows), "clinic_zip": rng.choice(["02134", "10001", "00501"], rows),
                  "visited_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "booked_at": (at - pd.Timedelta("3D")).strftime(
                      "%Y-%m-%d %H:%M"), "bmi": np.where(np.arange(rows) == 7, np.inf, rng.normal(27, 4, rows)),
                  "late": rng.integers(0, 2, rows)}).to_csv(lake / "visits.csv", index=False)
    pd.DataFrame({"clinic_zip": ["02134", "10001", "00501", "00501"], "beds": [10, 20, 30, 40]}).to_csv(
        lake / "clinics.csv", index=False)
    pd.DataFrame({"zip": ["02134"], "state": ["MA"]}).to_csv(lake / "states.csv", index=False)
    monkeypatch.chdir(tmp_path)
    main(["init", "p", "--table", "lake/visits.csv:timestamp=visited_at", "--table", "lake/clinics.csv",
          "--table", "lake/states.csv", "--entity", "clinic_zip", "--label", "was_late = late == 1"])
    out = capsys.readouterr().out
    assert "  as text    visits.clinic_zip, clinics.clinic_zip, states.zip: zero-padded codes ('02134' is not 2134)" in out
    assert "  not used   visits.booked_at (a timestamp): no feature as they are" in out
    assert "  unused     states: no column of it is named as an --entity (clinic_zip)" in out
    assert ("  warning    clinics: 1 clinic_zip value(s) with several rows (1 of them with different feature "
            "values), e.g. '00501'; validation refuses them") in out
    assert "  warning    infinite values in visits.bmi (1): validation refuses them until p_data.py" in out


def test_rows_without_a_time_are_left_out_and_said(tmp_path, capsys):
    """Events with no time fell out of the window's filter without a word: 15 of 300 visits gone."""
    frame = snapshots()
    frame.loc[frame.index % 25 == 3, "snapshot_at"] = pd.NaT
    done = scaffold(snapshot_spec(tmp_path / "lake", frame, "churned = churn == 'yes'"), tmp_path / "p")
    assert "kfops: snapshots: left out 16 of 400 rows without a time in snapshot_at" in capsys.readouterr().out
    assert len(entity_frame(done)) == 400 - 16 - frame["snapshot_at"].notna()[frame["churn"].isna()].sum()


def test_event_times_far_from_all_the_others_are_left_out_of_the_window(tmp_path):
    """Two visits dated 1970-01-01 (a default) and 2099-01-01 (a placeholder) made init's window
    1970..2099: a volume check of 0.01 rows a day, and a backtest of 1,500 months."""
    from kfops.datasets.scaffold import stray_times

    frame = snapshots()
    frame.loc[[5, 6, 7], "snapshot_at"] = pd.Timestamp("1970-01-01", tz="UTC")
    frame.loc[8, "snapshot_at"] = pd.Timestamp("2099-01-01", tz="UTC")
    done = scaffold(snapshot_spec(tmp_path / "lake", frame, "churned = churn == 'yes'"), tmp_path / "p")
    assert (str(done.start), str(done.end)) == ("2024-01-01", "2024-02-29")
    assert done.stray_times == ["1970-01-01 00:00:00+00:00"] * 3 + ["2099-01-01 00:00:00+00:00"]
    # Times the rest of the data reaches, or too many to be placeholders, are the data's own.
    plain = snapshots()["snapshot_at"]
    assert stray_times(plain)[1] == []
    many = pd.concat([plain, pd.Series([pd.Timestamp("2099-01-01", tz="UTC")] * 10)])
    assert stray_times(many)[1] == []  # 10 of 410 rows: more than 1%
