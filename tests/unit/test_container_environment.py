"""What a task container of `kfops run --runner docker` is given from this machine's environment."""

from __future__ import annotations

from kfops.runners.containers import forwarded_environment


def test_credentials_and_kfops_settings_are_forwarded_by_name():
    environ = {"AWS_ACCESS_KEY_ID": "k", "MLFLOW_TRACKING_URI": "http://m", "PGPASSWORD": "p",
               "KFOPS__FEATURES__REDIS_PASSWORD": "r", "NO_PROXY": "localhost", "HOME": "/root", "PATH": "/bin"}
    assert forwarded_environment(environ) == {key: environ[key] for key in
                                              ("AWS_ACCESS_KEY_ID", "MLFLOW_TRACKING_URI", "PGPASSWORD",
                                               "KFOPS__FEATURES__REDIS_PASSWORD", "NO_PROXY")}


def test_the_data_dir_and_the_runners_webhook_stay_on_this_machine():
    """The local runner notifies at the run's end itself: a container holding the webhook would
    send its own message (the retraining exit handler's) as well."""
    environ = {"KFOPS__DATA_DIR": "/home/me/state", "KFOPS__NOTIFY__WEBHOOK_URL": "https://hooks.example/x",
               "KFOPS__REGISTRY__MODEL_NAME": "m"}
    assert forwarded_environment(environ) == {"KFOPS__REGISTRY__MODEL_NAME": "m"}
