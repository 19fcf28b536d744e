"""Feishu/Lark long-connection wire format: the protobuf `Frame` of Feishu's `pbbp2.proto` and the protocol's names.

The message is declared here with the protobuf library (a runtime dependency already, through weaviate-client)
instead of importing lark-oapi's generated class: `lark_oapi/__init__` imports the SDK's whole generated API, ~11k
modules, ~150 MiB resident and seconds of CPU at every start, and its wheel is about 100 MB of an image whose goal is
300 MB (docs/images.md). The fields, numbers, types and labels are those of lark-oapi 1.7.5's `ws/pb/pbbp2_pb2.py`;
the tests' Feishu stand-in still builds its frames with lark-oapi's own class, so the two are checked against each
other on every long-connection test (tests/connectors/test_feishu_frame.py compares the bytes too).
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

__all__ = ["DecodeError", "Frame", "FrameType", "MessageType"]

# lark-oapi's ws/const.py
GEN_ENDPOINT_URI = "/callback/ws/endpoint"
SERVICE_ID = "service_id"
HEADER_TYPE = "type"
HEADER_MESSAGE_ID = "message_id"
HEADER_SUM = "sum"
HEADER_SEQ = "seq"
HEADER_BIZ_RT = "biz_rt"


class FrameType(Enum):  # lark-oapi's ws/enum.py
    CONTROL = 0
    DATA = 1


class MessageType(Enum):
    EVENT = "event"
    CARD = "card"
    PING = "ping"
    PONG = "pong"


def _declare() -> Any:
    f = descriptor_pb2.FieldDescriptorProto
    required, optional, repeated = f.LABEL_REQUIRED, f.LABEL_OPTIONAL, f.LABEL_REPEATED
    proto = descriptor_pb2.FileDescriptorProto(name="pbbp2.proto", package="pbbp2", syntax="proto2")
    header = proto.message_type.add(name="Header")
    header.field.add(name="key", number=1, type=f.TYPE_STRING, label=required)
    header.field.add(name="value", number=2, type=f.TYPE_STRING, label=required)
    frame = proto.message_type.add(name="Frame")
    for name, number, kind, label in (
        ("SeqID", 1, f.TYPE_UINT64, required),
        ("LogID", 2, f.TYPE_UINT64, required),
        ("service", 3, f.TYPE_INT32, required),
        ("method", 4, f.TYPE_INT32, required),
        ("headers", 5, f.TYPE_MESSAGE, repeated),
        ("payload_encoding", 6, f.TYPE_STRING, optional),
        ("payload_type", 7, f.TYPE_STRING, optional),
        ("payload", 8, f.TYPE_BYTES, optional),
        ("LogIDNew", 9, f.TYPE_STRING, optional),
    ):
        field = frame.field.add(name=name, number=number, type=kind, label=label)
        if kind == f.TYPE_MESSAGE:
            field.type_name = ".pbbp2.Header"
    # A pool of our own: the default pool may already hold a `pbbp2.proto` (another library's copy of the same file).
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("pbbp2.Frame"))


Frame: Any = _declare()
