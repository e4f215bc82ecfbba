"""The ASGI helpers every kfops server shares (body limit, JSON responses), and how the traffic
split and the log sink answer through them, driven with in-memory receive/send."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from kfops.serving.protocol.asgi import ClientGone, read_body, send_bytes, send_json
from kfops.serving.protocol.payloads import PayloadTooLarge, RequestError


def http_scope(path: str = "/", method: str = "POST", headers: list[tuple[bytes, bytes]] | None = None) -> dict:
    return {"type": "http", "method": method, "path": path, "query_string": b"", "headers": headers or []}


def receiver(*messages: dict):
    queue = list(messages)

    async def receive() -> dict:
        if not queue:
            raise AssertionError("read past the end of the request")
        return queue.pop(0)

    receive.left = queue  # type: ignore[attr-defined]
    return receive


def chunks(*parts: bytes) -> list[dict]:
    return [{"type": "http.request", "body": part, "more_body": i < len(parts) - 1} for i, part in enumerate(parts)]


class Sent(list):
    async def __call__(self, message: dict) -> None:
        self.append(message)

    @property
    def status(self) -> int:
        return self[0]["status"]

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return self[0]["headers"]

    @property
    def json(self):
        return orjson.loads(self[1]["body"])


def test_a_single_chunk_body_is_returned_as_is():
    body = b'{"instances": []}'
    assert asyncio.run(read_body(http_scope(), receiver(*chunks(body)), 100)) is body


def test_a_chunked_body_is_joined():
    assert asyncio.run(read_body(http_scope(), receiver(*chunks(b"ab", b"", b"cd")), 100)) == b"abcd"


def test_a_declared_oversize_body_is_refused_before_any_of_it_is_read():
    receive = receiver(*chunks(b"x" * 10))
    scope = http_scope(headers=[(b"content-length", b"101")])
    with pytest.raises(PayloadTooLarge, match="of 101 bytes exceeds the limit of 100 bytes") as err:
        asyncio.run(read_body(scope, receive, 100))
    assert err.value.status == 413
    assert len(receive.left) == 1


def test_a_streamed_oversize_body_is_refused_at_the_chunk_that_passes_the_limit():
    receive = receiver(*chunks(b"x" * 60, b"x" * 60, b"x" * 60))
    with pytest.raises(PayloadTooLarge, match="exceeds the limit of 100 bytes"):
        asyncio.run(read_body(http_scope(), receive, 100))
    assert len(receive.left) == 1


def test_a_content_length_that_is_not_a_number_is_a_400():
    with pytest.raises(RequestError, match="not a number") as err:
        asyncio.run(read_body(http_scope(headers=[(b"content-length", b"ten")]), receiver(), 100))
    assert err.value.status == 400


def test_a_client_that_leaves_mid_body_raises_client_gone():
    receive = receiver(chunks(b"ab", b"cd")[0], {"type": "http.disconnect"})
    with pytest.raises(ClientGone):
        asyncio.run(read_body(http_scope(), receive, 100))


def _encoded(encoding: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-encoding", encoding)]


@pytest.mark.parametrize("encoding", [b"gzip", b"GZIP", b"x-gzip", b"deflate", b"identity"])
def test_a_compressed_body_is_inflated(encoding):
    """A client that gzips a large batch (requests, httpx, curl --compressed) got 400 'not JSON'."""
    import gzip
    import zlib

    body = orjson.dumps({"instances": [{"x": i} for i in range(500)]})
    sent = {b"gzip": gzip.compress, b"x-gzip": gzip.compress, b"deflate": zlib.compress}.get(encoding.lower(), bytes)(body)
    half = len(sent) // 2
    got = asyncio.run(read_body(http_scope(headers=_encoded(encoding)), receiver(*chunks(sent[:half], sent[half:])), 10**6))
    assert got == body


def test_a_compressed_body_that_inflates_past_the_limit_is_413_without_inflating_it_all():
    import gzip

    bomb = gzip.compress(b" " * 50_000_000)  # about 50 kB on the wire
    with pytest.raises(PayloadTooLarge, match="inflates past the limit of 1000000 bytes"):
        asyncio.run(read_body(http_scope(headers=_encoded(b"gzip")), receiver(*chunks(bomb)), 1_000_000))


@pytest.mark.parametrize(("encoding", "body", "error", "status"), [
    (b"br", b"\x00", "Content-Encoding 'br' is not supported", 415),
    (b"gzip", b'{"instances": []}', "is not valid gzip", 400),
    (b"gzip", None, "truncated gzip", 400),
])
def test_a_body_that_does_not_match_its_encoding_is_named(encoding, body, error, status):
    import gzip

    body = gzip.compress(b'{"instances": []}')[:-8] if body is None else body
    with pytest.raises(RequestError, match=error) as raised:
        asyncio.run(read_body(http_scope(headers=_encoded(encoding)), receiver(*chunks(body)), 1000))
    assert raised.value.status == status


def test_json_and_byte_responses_carry_type_extra_headers_and_length_in_order():
    sent = Sent()
    asyncio.run(send_json(sent, 201, {"a": 1}))
    assert sent.status == 201 and sent.json == {"a": 1}
    assert sent.headers == [(b"content-type", b"application/json"), (b"content-length", b"7")]
    sent = Sent()
    asyncio.run(send_bytes(sent, 404, b'{"error":"x"}', [(b"x-kfops-backend", b"canary")]))
    assert sent.headers == [(b"content-type", b"application/json"), (b"x-kfops-backend", b"canary"),
                            (b"content-length", b"13")]
    assert sent[1] == {"type": "http.response.body", "body": b'{"error":"x"}'}


# --- the sidecars answer through them ---------------------------------------------------------


def test_the_split_control_route_reads_its_body():
    from kfops.serving.sidecars.split import CONTROL_PATH, TrafficSplit

    router = TrafficSplit("http://stable", "http://canary", 50, token="t")
    sent = Sent()
    asyncio.run(router(http_scope(CONTROL_PATH, headers=[(b"authorization", b"Bearer t")]),
                       receiver(*chunks(b'{"canary_percent":', b" 5}")), sent))
    assert sent.status == 200 and sent.json["canary_percent"] == 5 == router.canary_percent


def test_the_log_sink_rejects_an_oversize_event_with_413_and_counts_it(monkeypatch):
    from kfops.serving.sidecars import log_sink

    monkeypatch.setattr(log_sink, "MAX_EVENT_BYTES", 10)
    sink = log_sink.CloudEventSink(store="/nowhere")
    sent = Sent()
    asyncio.run(sink(http_scope(), receiver(*chunks(b"x" * 6, b"x" * 6)), sent))
    assert sent.status == 413 and sent.json == {"error": "event over 10 bytes"}
    assert sink.counts["rejected"] == 1


def test_the_log_sink_ignores_a_client_that_left():
    from kfops.serving.sidecars.log_sink import CloudEventSink

    sink = CloudEventSink(store="/nowhere")
    sent = Sent()
    asyncio.run(sink(http_scope(), receiver(chunks(b"{", b"}")[0], {"type": "http.disconnect"}), sent))
    assert sent == [] and sink.counts == {"events": 0, "rows": 0, "rejected": 0, "files": 0, "dropped": 0}
