"""Verifying an MLflow webhook delivery (pure): its HMAC signature, its age, and replays.

MLflow (3.x, ``mlflow/webhooks/delivery.py``) signs ``"<delivery id>.<unix timestamp>.<body>"``
with HMAC-SHA256 under the webhook's secret and sends ``X-MLflow-Signature: v1,<base64>``,
``X-MLflow-Timestamp`` and ``X-MLflow-Delivery-Id``. A delivery is accepted only when the
signature matches, the timestamp is within ``max_age_s`` of now (either way: clocks drift), and its
delivery id was not seen before (a replayed request is ignored, not acted on twice).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"
ALIAS_CREATED = "model_version_alias.created"
ALIAS_DELETED = "model_version_alias.deleted"


class WebhookRejected(Exception):
    """The delivery is not authentic or too old; ``reason`` says which (no secret in it)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes | str) -> str:
    """The ``X-MLflow-Signature`` value MLflow sends for this delivery."""
    payload = body.decode("utf-8") if isinstance(body, bytes) else body
    digest = hmac.new(secret.encode("utf-8"), f"{delivery_id}.{timestamp}.{payload}".encode(), hashlib.sha256)
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest.digest()).decode()}"


def _header(headers: Mapping[str, str], name: str) -> str:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return ""


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    timestamp: int


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float, max_age_s: float) -> Delivery:
    """Check the signature and the age of a delivery; raise :class:`WebhookRejected` naming why not."""
    if not secret:
        raise WebhookRejected("the controller has no webhook secret, so it accepts nothing")
    delivery_id, stamp, signature = (_header(headers, h) for h in (DELIVERY_ID_HEADER, TIMESTAMP_HEADER,
                                                                    SIGNATURE_HEADER))
    if not (delivery_id and stamp and signature):
        raise WebhookRejected(f"missing {SIGNATURE_HEADER}, {TIMESTAMP_HEADER} or {DELIVERY_ID_HEADER}")
    try:
        payload = body.decode("utf-8")
        timestamp = int(stamp)
    except (UnicodeDecodeError, ValueError) as err:
        raise WebhookRejected(f"malformed delivery: {err}") from err
    expected = sign(secret, delivery_id, stamp, payload)
    # Several space-separated signatures may come during a secret rotation; one must match.
    offered = [s.strip() for s in signature.split(" ") if s.strip()]
    # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, not a 401).
    if not any(hmac.compare_digest(expected.encode(), s.encode("utf-8", "replace")) for s in offered):
        raise WebhookRejected("the signature does not match the webhook secret")
    if abs(now - timestamp) > max_age_s:
        raise WebhookRejected(f"stale delivery: sent {now - timestamp:.0f}s from now, at most {max_age_s:g}s allowed")
    return Delivery(delivery_id, timestamp)


class SeenDeliveries:
    """Delivery ids seen within the freshness window; a second sighting is a replay.

    Ids older than the window need not be kept: their timestamps make them stale anyway.
    """

    def __init__(self, window_s: float, max_ids: int = 100_000):
        self.window_s, self.max_ids = window_s, max_ids
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, delivery_id: str, now: float) -> bool:
        """Record ``delivery_id``; False when it was seen before (a replay)."""
        with self._lock:
            while self._seen and (len(self._seen) >= self.max_ids
                                  or next(iter(self._seen.values())) < now - 2 * self.window_s):
                self._seen.popitem(last=False)
            if delivery_id in self._seen:
                return False
            self._seen[delivery_id] = now
            return True
