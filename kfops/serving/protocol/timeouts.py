"""A read deadline for each request's head and body, on top of uvicorn's HTTP protocol.

uvicorn bounds only the idle time between requests (``timeout_keep_alive``): a client that
connects and sends nothing, or sends its headers or body a byte at a time, holds its connection
(and a file descriptor) for as long as it likes. :func:`read_timeout_protocol` gives a protocol
class that closes such a connection ``seconds`` after it opened, or after its request began,
unless the whole request (head and body) has arrived by then. The time the application takes to
answer is not counted: that is the request deadline's business (``serving.request_timeout_s``).

Pass the class as uvicorn's ``http`` setting. Under it the application sees an
``http.disconnect`` while it waits for the body, and answers nothing.
"""

from __future__ import annotations

from typing import Any

DEFAULT_READ_TIMEOUT_S = 15.0


def read_timeout_protocol(seconds: float = DEFAULT_READ_TIMEOUT_S) -> type:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class ReadTimeoutProtocol(HttpToolsProtocol):
        read_timeout_s = seconds
        _read_timer: Any = None

        def _arm(self) -> None:
            if self._read_timer is None:
                self._read_timer = self.loop.call_later(self.read_timeout_s, self._read_timed_out)

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _read_timed_out(self) -> None:
            self._read_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return ReadTimeoutProtocol
