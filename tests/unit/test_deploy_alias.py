"""The deploy step serves what @champion names when it deploys, whatever other runs do meanwhile.

Four concurrent training runs with auto_promote ended with @champion on v3 and the server on v1
(tests/reliability/test_concurrent_runs.py, once in CI): a deploy read the alias (v1), another run
moved it to v3 and served v3, then the first deploy served the v1 it had read.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

from kfops.config import load_config
from kfops.steps import deploy as deploy_step


def test_a_deploy_never_serves_an_alias_it_read_before_another_run_moved_it(tmp_path, monkeypatch):
    from kfops.adapters import mlflow_registry as registry

    cfg = load_config(None, [f"data_dir={tmp_path}", "serving.target=local"], environ={})
    champion = {"version": "1"}
    served: list[str] = []
    first_read, second_done = threading.Event(), threading.Event()

    def model_version(cfg, alias=None):
        version = champion["version"]
        if threading.current_thread().name == "first":
            first_read.set()
        return SimpleNamespace(version=version, name="m")

    def serve_version(cfg, version):
        if threading.current_thread().name == "first":
            # The first deploy is slow (a model fetch, a server start): the second run promotes
            # and deploys meanwhile, if the first one lets it.
            second_done.wait(timeout=1.0)
        served.append(version)
        return {"endpoint": "http://127.0.0.1:1", "version": version}

    monkeypatch.setattr(registry, "model_version", model_version)
    monkeypatch.setattr(deploy_step, "serve_version", serve_version)

    def second_run():
        champion["version"] = "3"  # auto_promote moved @champion
        deploy_step.deploy(cfg)
        second_done.set()

    first = threading.Thread(target=deploy_step.deploy, args=(cfg,), name="first")
    first.start()
    assert first_read.wait(timeout=30)
    second = threading.Thread(target=second_run, name="second")
    second.start()
    first.join(timeout=60)
    second.join(timeout=60)
    assert not first.is_alive() and not second.is_alive()
    assert served == ["1", "3"]  # the last thing served is what @champion names
