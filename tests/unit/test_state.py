"""State that outlives a run: the pure logic of kfops.core.state over the local store, the config
key, and what submit says without one. The same interface on S3: tests/integration/test_state_store.py."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from kfops.adapters.state_store import LocalStateStore, S3StateStore, store_at
from kfops.config import KfopsConfig, load_config
from kfops.core.retrain_policy import (
    RETRAIN_DRIFT,
    DriftSummary,
    PolicyState,
    RetrainPolicy,
    decide_and_record,
    decide_and_record_in,
)
from kfops.core.state import check_key, read_json, update_json, write_json
from kfops.errors import ConfigError, DataError

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize("key", ["", "/a", "a/", "a//b", "../a", "a/../b", "a/./b", "a b", ".hidden"])
def test_a_key_every_backend_can_hold_or_a_clear_error(key):
    with pytest.raises(ValueError, match="state key"):
        check_key(key)


def test_keys_that_pass():
    for key in ("retrain_policy.json", "validation/raw.last.json", "date=2024-05-01/part-1.parquet"):
        assert check_key(key) == key


def test_local_store_keeps_the_embedded_default_layout(tmp_path):
    store = LocalStateStore(tmp_path)
    assert store.read("validation/raw.last.json") is None
    write_json(store, "validation/raw.last.json", {"stats": {"tables": {}}})
    assert read_json(store, "validation/raw.last.json") == {"stats": {"tables": {}}}
    assert (tmp_path / "validation" / "raw.last.json").is_file()
    assert store.list_keys() == ["validation/raw.last.json"] and store.list_keys("validation") == ["validation/raw.last.json"]
    assert store.list_keys("nothing") == []


def test_a_conditional_write_loses_to_a_change_it_did_not_see(tmp_path):
    store = LocalStateStore(tmp_path)
    assert store.write_if("k.json", b"1", None)
    assert not store.write_if("k.json", b"2", None)  # exists already
    _, version = store.read_versioned("k.json")
    store.write("k.json", b"3")  # someone else
    assert not store.write_if("k.json", b"4", version)
    assert store.read("k.json") == b"3"
    assert store.write_if("k.json", b"5", store.read_versioned("k.json")[1]) and store.read("k.json") == b"5"
    assert store.list_keys() == ["k.json"]  # the lock file is no state


def test_concurrent_updates_all_land(tmp_path):
    store = LocalStateStore(tmp_path)
    start = threading.Barrier(8)

    def add(me: int) -> None:
        start.wait()
        for step in range(5):
            update_json(store, "log.json", lambda items, entry=f"{me}-{step}": ([*(items or []), entry], None))

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(read_json(store, "log.json")) == sorted(f"{i}-{s}" for i in range(8) for s in range(5))


def test_a_corrupt_state_is_named(tmp_path):
    store = LocalStateStore(tmp_path)
    store.write("bad.json", b"{not json")
    with pytest.raises(DataError, match=str(tmp_path / "bad.json")):
        read_json(store, "bad.json")


def test_decisions_in_the_store_are_the_file_decide_and_record_keeps(tmp_path):
    """The store and the older path API share the file and its lock: one history either way."""
    policy = RetrainPolicy(mode="drift", debounce=2, cooldown="0s")
    store = LocalStateStore(tmp_path)
    first = decide_and_record_in(store, "retrain_policy.json", DriftSummary(drift=True, report="r1"), T0, policy)
    second = decide_and_record(tmp_path / "retrain_policy.json", DriftSummary(drift=True, report="r2"),
                               T0 + dt.timedelta(days=1), policy)
    assert (first.code, second.code) == ("debounce", RETRAIN_DRIFT)
    assert [d.drift_report for d in PolicyState.load(tmp_path / "retrain_policy.json").decisions] == ["r1", "r2"]


def test_two_checks_at_once_never_both_spend_the_last_retrain(tmp_path):
    """Without a conditional write both racing checks read an empty history and both retrain."""
    policy = RetrainPolicy(mode="drift", debounce=1, cooldown="0s", max_retrains=1, period="30d")
    start = threading.Barrier(6)
    codes: list[str] = []

    def check(me: int) -> None:
        start.wait()
        decision = decide_and_record_in(LocalStateStore(tmp_path), "retrain_policy.json",
                                        DriftSummary(drift=True, report=f"r{me}"), T0, policy)
        codes.append(decision.code)

    threads = [threading.Thread(target=check, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    history = PolicyState.load(tmp_path / "retrain_policy.json").decisions
    assert len(history) == 6 and sum(d.retrain for d in history) <= 1 and codes.count(RETRAIN_DRIFT) <= 1


def test_state_store_config_is_an_s3_uri():
    assert KfopsConfig().state.store is None
    cfg = load_config(None, ["state.store=s3://bucket/kfops-state/"], environ={})
    assert cfg.state.store == "s3://bucket/kfops-state"
    assert cfg.state_location == f"s3://bucket/kfops-state/{cfg.project}"
    assert cfg.inference_log_location == f"s3://bucket/kfops-state/{cfg.project}/inference_logs"
    both = load_config(None, ["state.store=s3://bucket/s", "serving.inference_log_store=s3://logs/x"], environ={})
    assert both.inference_log_location == "s3://logs/x"
    for bad in ("/var/kfops", "s3://", "gs://bucket/x", "redis://x"):
        with pytest.raises(ConfigError, match=r"state\.store"):
            load_config(None, [f"state.store={bad}"], environ={})


def test_the_default_state_location_is_data_dir(tmp_path):
    cfg = load_config(None, [f"data_dir={tmp_path}"], environ={})
    assert cfg.state_location == tmp_path
    assert isinstance(store_at(cfg.state_location), LocalStateStore)
    s3 = store_at("s3://bucket/a/b")
    assert isinstance(s3, S3StateStore) and s3.uri("k/v.json") == "s3://bucket/a/b/k/v.json"
    with pytest.raises(ConfigError, match="neither a folder nor an s3"):
        store_at("gs://bucket/x")


def test_submit_names_a_missing_state_store():
    from kfops.adapters.kfp_api import cluster_config_problems

    settings = {"registry": {"tracking_uri": "http://mlflow.kubeflow.svc:5000"},
                "features": {"registry": "s3://kfops-bucket/feast/registry.db"}}
    problems = cluster_config_problems(KfopsConfig.model_validate(settings))
    assert len(problems) == 1 and "state.store is not set" in problems[0] and "s3://" in problems[0]
    settings["state"] = {"store": "s3://kfops-bucket/kfops-state"}
    assert cluster_config_problems(KfopsConfig.model_validate(settings)) == []


def test_projects_sharing_one_state_store_keep_their_state_apart(tmp_path):
    """A cluster's projects share the store `kfops config from-terraform` sets: one project's row
    counts, retrain decisions and inference logs must never be read as another's."""
    from kfops.adapters.state_store import state_store

    shop, flights = (load_config(None, [f"project={name}", "state.store=s3://bucket/kfops-state"], environ={})
                     for name in ("shop", "flights"))
    assert shop.state_location == "s3://bucket/kfops-state/shop"
    assert {shop.inference_log_location, flights.inference_log_location} == {
        "s3://bucket/kfops-state/shop/inference_logs", "s3://bucket/kfops-state/flights/inference_logs"}
    assert state_store(shop).object_key("validation/raw.last.json") == "kfops-state/shop/validation/raw.last.json"
    assert state_store(flights).object_key("retrain_policy.json") == "kfops-state/flights/retrain_policy.json"
    # Locally, state stays in each project's data_dir, as before.
    assert load_config(None, ["project=shop", f"data_dir={tmp_path}"], environ={}).state_location == tmp_path
    for bad in ("../other", "a/b", "", "shop project"):
        with pytest.raises(ConfigError, match="project"):
            load_config(None, [f"project={bad}"], environ={})
