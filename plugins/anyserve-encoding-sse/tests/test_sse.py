"""The ``sse`` encoding: wire format checked by an independent parser, and hook registration."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest

import anyserve_encoding_sse.plugin
from anyserve.catalog import Catalog
from anyserve.config import load_settings
from anyserve.encoding import StreamEncoder
from anyserve.errors import ConfigError
from anyserve.plugins import create_plugin_manager
from anyserve_encoding_sse import SSEEncoder

# --------------------------------------------------------------------------
# A small event-stream parser written from the WHATWG HTML spec,
# section 9.2.6 "Interpreting an event stream", independent of the encoder.
# --------------------------------------------------------------------------


@dataclass
class Event:
    type: str
    data: str
    id: str


def parse_event_stream(body: bytes) -> list[Event]:
    """Events a conforming client would dispatch for ``body``."""
    text = body.decode("utf-8")
    text = text.removeprefix("\ufeff")  # one leading BOM is ignored
    events: list[Event] = []
    event_type, data, last_id = "", "", ""
    # Lines end at CRLF, LF or CR. A trailing incomplete line is not a line.
    lines = re.split(r"\r\n|\n|\r", text)
    lines.pop()  # what follows the last end-of-line
    for line in lines:
        if line == "":
            # Dispatch: no data means no event; the final LF of data is removed.
            if data:
                events.append(Event(event_type or "message", data.removesuffix("\n"), last_id))
            event_type, data = "", ""
            continue
        if line.startswith(":"):
            continue  # comment
        if ":" in line:
            field, value = line.split(":", 1)
            value = value.removeprefix(" ")
        else:
            field, value = line, ""
        if field == "event":
            event_type = value
        elif field == "data":
            data += value + "\n"
        elif field == "id" and "\0" not in value:
            last_id = value
        # "retry" and unknown fields do not affect dispatched events.
    # Data left without a closing blank line is discarded at end of stream.
    return events


def test_parser_follows_the_spec_examples():
    # The spec's own examples: multi-line data, comments, CR / CRLF line ends, unterminated tail.
    body = b": comment\ndata: YHOO\ndata: +2\ndata: 10\n\nevent: add\r\ndata:73857293\r\n\rdata\n\ndata: lost"
    assert parse_event_stream(body) == [
        Event("message", "YHOO\n+2\n10", ""),
        Event("add", "73857293", ""),
        Event("message", "", ""),  # a bare "data" field still dispatches, with empty data
    ]


# --------------------------------------------------------------------------
# The encoder
# --------------------------------------------------------------------------


@pytest.fixture
def encoder() -> SSEEncoder:
    return SSEEncoder()


def test_implements_the_stream_encoder_protocol(encoder):
    assert isinstance(encoder, StreamEncoder)
    assert encoder.media_type == "text/event-stream"


def test_event_is_one_compact_data_line(encoder):
    out = encoder.event({"model_name": "chat", "outputs": [{"name": "text", "data": ["hi"]}]})
    assert out == b'data: {"model_name":"chat","outputs":[{"name":"text","data":["hi"]}]}\n\n'


@pytest.mark.parametrize(
    "payload",
    [
        {"text": "line one\nline two\r\nthree\rfour"},
        {"text": "data: fake\n\nevent: end\ndata: [DONE]\n\n"},
        {"text": ": not a comment", "nested": {"a": [1, 2.5, None, True]}},
        {"text": "héllo 世界 🙂 \u2028\u2029\x00\t"},
        {},
    ],
)
def test_event_round_trips_through_a_spec_parser(encoder, payload):
    out = encoder.event(payload)
    assert out.count(b"\n") == 2, "one data line, then the blank line"
    [event] = parse_event_stream(out)
    assert event.type == "message"
    assert json.loads(event.data) == payload


def test_non_ascii_is_sent_as_utf8_not_escaped(encoder):
    assert "世界".encode() in encoder.event({"text": "世界"})


def test_lone_surrogate_falls_back_to_escapes(encoder):
    out = encoder.event({"text": "\ud800"})
    [event] = parse_event_stream(out)
    assert json.loads(event.data) == {"text": "\ud800"}


def test_error_is_a_distinct_named_event(encoder):
    out = encoder.error("worker crashed\nmid-request", "UNAVAILABLE")
    assert out.startswith(b"event: error\ndata: ")
    [event] = parse_event_stream(out)
    assert event.type == "error"
    assert json.loads(event.data) == {"error": "worker crashed\nmid-request", "code": "UNAVAILABLE"}


def test_end_carries_event_name_and_done_marker(encoder):
    assert encoder.end() == b"event: end\ndata: [DONE]\n\n"
    [event] = parse_event_stream(encoder.end())
    assert (event.type, event.data) == ("end", "[DONE]")


def test_a_whole_stream_parses_into_its_events_in_order(encoder):
    body = encoder.event({"i": 0}) + encoder.event({"i": 1}) + encoder.end()
    events = parse_event_stream(body)
    assert [e.type for e in events] == ["message", "message", "end"]
    assert [json.loads(e.data) for e in events[:2]] == [{"i": 0}, {"i": 1}]
    # An OpenAI-style client reading only ``data`` stops at the marker.
    assert events[-1].data == "[DONE]"


def test_failed_stream_ends_with_error(encoder):
    events = parse_event_stream(encoder.event({"i": 0}) + encoder.error("boom", "INTERNAL"))
    assert [e.type for e in events] == ["message", "error"]


def test_real_parser_agrees_when_installed(encoder):
    """Cross-check against httpx-sse's decoder (a dev requirement; skipped where it is not installed)."""
    httpx_sse = pytest.importorskip("httpx_sse._decoders")
    decoder = httpx_sse.SSEDecoder()
    body = encoder.event({"text": "a\nb"}) + encoder.error("boom", "INTERNAL") + encoder.end()
    got = []
    for line in body.decode().splitlines():
        sse = decoder.decode(line)
        if sse is not None:
            got.append((sse.event, sse.data))
    assert got == [("message", '{"text":"a\\nb"}'), ("error", '{"error":"boom","code":"INTERNAL"}'), ("end", "[DONE]")]


# --------------------------------------------------------------------------
# Registration through the real hook path
# --------------------------------------------------------------------------


@pytest.fixture
def catalog() -> Catalog:
    pm = create_plugin_manager(entrypoints=False, env={}, plugins=(anyserve_encoding_sse.plugin,))
    return Catalog(pm)


def test_default_settings_select_sse(catalog):
    record = catalog.encoding(load_settings(env={}))
    assert record.name == "sse"
    assert record.media_type == "text/event-stream"
    assert catalog.registries["encoding"].owners["sse"] == "anyserve_encoding_sse.plugin"
    encoder = record.factory({})
    assert isinstance(encoder, StreamEncoder)
    assert encoder.end() == b"event: end\ndata: [DONE]\n\n"


def test_sse_sits_beside_the_builtin_jsonl(catalog):
    assert {"jsonl", "sse"} <= set(catalog.registries["encoding"].names())


def test_environment_selects_sse_explicitly(catalog):
    settings = load_settings(env={"ANYSERVE_STREAM_ENCODING": "sse"})
    assert catalog.encoding(settings).name == "sse"


def test_options_are_rejected_clearly(catalog):
    record = catalog.encoding(load_settings(env={}))
    with pytest.raises(ConfigError, match="takes no options; got retry"):
        record.factory({"retry": 1000})


def test_without_the_plugin_sse_is_not_installed():
    catalog = Catalog(create_plugin_manager(entrypoints=False, env={}))
    with pytest.raises(ConfigError, match="no stream encoding named 'sse'"):
        catalog.encoding(load_settings(env={}))
