"""Webhook verification against MLflow's own signing code (mlflow/webhooks/delivery.py)."""

from __future__ import annotations

import pytest

from kfops.core.webhook import SeenDeliveries, WebhookRejected, sign, verify

SECRET = "s3cret"
BODY = b'{"entity": "model_version_alias", "action": "created", "data": {"name": "m", "alias": "champion", "version": "2"}}'


def headers(signature: str, stamp: str = "1700000000", delivery: str = "d-1") -> dict[str, str]:
    return {"x-mlflow-signature": signature, "x-mlflow-timestamp": stamp, "x-mlflow-delivery-id": delivery}


def test_the_signature_is_the_one_mlflow_sends():
    from mlflow.webhooks.delivery import _generate_hmac_signature

    assert sign(SECRET, "d-1", "1700000000", BODY) == _generate_hmac_signature(SECRET, "d-1", "1700000000", BODY.decode())
    delivery = verify(SECRET, headers(sign(SECRET, "d-1", "1700000000", BODY)), BODY, now=1700000010, max_age_s=300)
    assert (delivery.delivery_id, delivery.timestamp) == ("d-1", 1700000000)


@pytest.mark.parametrize("case, reason", [
    ("other secret", "does not match"), ("tampered body", "does not match"), ("stale", "stale"),
    ("from the future", "stale"), ("no headers", "missing"), ("no secret here", "no webhook secret"),
])
def test_forged_stale_or_unsigned_deliveries_are_refused(case, reason):
    good = sign(SECRET, "d-1", "1700000000", BODY)
    args = {"secret": SECRET, "headers": headers(good), "body": BODY, "now": 1700000000.0, "max_age_s": 300.0}
    if case == "other secret":
        args["headers"] = headers(sign("other", "d-1", "1700000000", BODY))
    elif case == "tampered body":
        args["body"] = BODY.replace(b'"2"', b'"3"')
    elif case == "stale":
        args["now"] = 1700000000 + 301
    elif case == "from the future":
        args["now"] = 1700000000 - 301
    elif case == "no headers":
        args["headers"] = {}
    else:
        args["secret"] = ""
    with pytest.raises(WebhookRejected, match=reason):
        verify(**args)


def test_a_delivery_id_counts_once_within_the_window():
    seen = SeenDeliveries(window_s=300)
    assert seen.first_time("d-1", now=1000) and seen.first_time("d-2", now=1001)
    assert not seen.first_time("d-1", now=1100)
    assert seen.first_time("d-1", now=2000)  # forgotten after two windows: its timestamp is stale by then anyway
