"""Our declaration of Feishu's long-connection Frame (connectors/feishu_frame.py) against lark-oapi's generated class:
the same bytes both ways, for every field the protocol uses. lark-oapi is a test dependency here: the official SDK's
class is the reference for the wire format, which no Feishu server can be asked about from this machine."""

from __future__ import annotations

import pytest
from lark_oapi.ws.pb.pbbp2_pb2 import Frame as LarkFrame

from ai_assistant.connectors import feishu_frame as wire


def _fill(frame: object) -> None:
    frame.SeqID, frame.LogID, frame.service, frame.method = 2**63 + 5, 42, 7, wire.FrameType.DATA.value  # type: ignore[attr-defined]
    for key, value in (("type", "event"), ("message_id", "m-1"), ("sum", "2"), ("seq", "1"), ("trace_id", "t")):
        frame.headers.add(key=key, value=value)  # type: ignore[attr-defined]
    frame.payload_encoding, frame.payload_type = "json", "x"  # type: ignore[attr-defined]
    frame.payload, frame.LogIDNew = '{"schema":"2.0","text":"年假"}'.encode(), "log-new"  # type: ignore[attr-defined]


def test_our_frame_writes_the_bytes_lark_oapi_writes() -> None:
    ours, theirs = wire.Frame(), LarkFrame()
    _fill(ours)
    _fill(theirs)
    assert ours.SerializeToString() == theirs.SerializeToString()


def test_each_reads_what_the_other_wrote() -> None:
    theirs = LarkFrame()
    _fill(theirs)
    ours = wire.Frame()
    ours.ParseFromString(theirs.SerializeToString())
    assert {h.key: h.value for h in ours.headers}["message_id"] == "m-1"
    assert (ours.SeqID, ours.service, ours.method, ours.payload) == (theirs.SeqID, 7, 1, theirs.payload)
    back = LarkFrame()
    back.ParseFromString(ours.SerializeToString())
    assert back == theirs


def test_a_ping_frame_matches_the_sdks_ping() -> None:
    ours = wire.Frame(SeqID=0, LogID=0, service=3, method=wire.FrameType.CONTROL.value)
    ours.headers.add(key=wire.HEADER_TYPE, value=wire.MessageType.PING.value)
    theirs = LarkFrame(SeqID=0, LogID=0, service=3, method=0)
    theirs.headers.add(key="type", value="ping")
    assert ours.SerializeToString() == theirs.SerializeToString()


def test_bytes_that_are_not_a_frame_raise_the_decode_error_the_connector_catches() -> None:
    with pytest.raises(wire.DecodeError):
        wire.Frame().ParseFromString(b"\xff\xff\xff not protobuf")


def test_an_empty_frame_reads_as_the_sdk_reads_it_not_as_data() -> None:
    # proto2 parsing does not enforce required fields (lark-oapi's class neither): an empty frame is method 0, a
    # CONTROL frame, which the connector ignores rather than taking it for an event.
    ours, theirs = wire.Frame(), LarkFrame()
    ours.ParseFromString(b"")
    theirs.ParseFromString(b"")
    assert (ours.method, ours.IsInitialized()) == (theirs.method, theirs.IsInitialized()) == (0, False)
    assert ours.method != wire.FrameType.DATA.value
