"""Posting a notification to ``notify.webhook_url``, bounded by ``notify.timeout_s``.

The URL carries its token (Slack's do), so no message here names it: a failure says which
setting it was and what went wrong, never where it pointed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kfops.errors import ServiceUnavailable

if TYPE_CHECKING:
    from kfops.config import NotifyConfig


def send(notify: NotifyConfig, payload: dict[str, Any], say: Callable[[str], None]) -> None:
    """Post ``payload`` to ``notify.webhook_url`` (none: nothing) and ``say`` how it went; never raises:
    whatever the webhook does, the run's own result stands."""
    if notify.webhook_url is None:
        return
    events = ", ".join(payload.get("kfops", {}).get("events", []))
    try:
        post_notification(notify.webhook_url.get_secret_value(), payload, notify.timeout_s)
    except ServiceUnavailable as err:
        say(f"kfops: could not notify: {err}")
    else:
        say(f"kfops: notified the webhook: {events}")


def post_notification(url: str, payload: dict[str, Any], timeout_s: float) -> None:
    """POST ``payload`` as JSON; raises :class:`ServiceUnavailable` (the URL left out) unless a 2xx comes back."""
    import httpx

    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False) as http:
            response = http.post(url, json=payload)
    except httpx.TimeoutException:
        raise ServiceUnavailable(f"the notify webhook (notify.webhook_url) did not answer within {timeout_s:g}s") from None
    except httpx.HTTPError as err:
        raise ServiceUnavailable(f"the notify webhook (notify.webhook_url) could not be reached: "
                                 f"{type(err).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise ServiceUnavailable(f"the notify webhook (notify.webhook_url) answered HTTP {response.status_code}")
