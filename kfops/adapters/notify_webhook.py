"""Posting a notification to ``notify.webhook_url``, bounded by ``notify.timeout_s``.

The URL carries its token (Slack's do), so no message here names it: a failure says which
setting it was and what went wrong, never where it pointed.
"""

from __future__ import annotations

from typing import Any

from kfops.errors import ServiceUnavailable


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
