"""Writes the seed inputs of a fuzzing run into the folder given (scripts/fuzz: .build-fuzz/seeds): what a caller sends after its preface (see
Fuzz/Sources/bindu-mesh-fuzz/FuzzHTTP2.swift), and header blocks for the HPACK decoder."""
import pathlib

import hpack
from hyperframe.frame import (ContinuationFrame, DataFrame, HeadersFrame, PingFrame, PriorityFrame, RstStreamFrame,
                              SettingsFrame, WindowUpdateFrame)

import sys

CORPUS = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".build-fuzz/seeds")
REQUEST = [(":method", "POST"), (":scheme", "http"), (":path", "/bindu.grpc.AgentHandler/HandleMessages"),
           (":authority", "127.0.0.1:3776"), ("content-type", "application/grpc"), ("te", "trailers"),
           ("grpc-timeout", "30S")]
BODY = b"\x00\x00\x00\x00\x05\x0a\x03\x12\x01x"


def frames(*items):
    return SettingsFrame(0).serialize() + b"".join(item.serialize() for item in items)


def seeds():
    encoder = hpack.Encoder()
    block = encoder.encode(REQUEST)
    yield "unary", frames(HeadersFrame(1, data=block, flags=["END_HEADERS"]),
                          DataFrame(1, data=BODY, flags=["END_STREAM"]))
    yield "two-calls-dynamic-table", frames(
        HeadersFrame(1, data=block, flags=["END_HEADERS"]), DataFrame(1, data=BODY, flags=["END_STREAM"]),
        HeadersFrame(3, data=encoder.encode(REQUEST), flags=["END_HEADERS"]), DataFrame(3, data=BODY, flags=["END_STREAM"]))
    third = len(block) // 3
    yield "continuations", frames(HeadersFrame(1, data=block[:third]), ContinuationFrame(1, data=block[third:2 * third]),
                                  ContinuationFrame(1, data=block[2 * third:], flags=["END_HEADERS"]),
                                  DataFrame(1, data=BODY, flags=["END_STREAM"]))
    yield "padded-priority", frames(HeadersFrame(1, data=block, flags=["END_HEADERS", "PADDED", "PRIORITY"],
                                                 pad_length=4, depends_on=0, stream_weight=16),
                                    DataFrame(1, data=BODY, flags=["END_STREAM", "PADDED"], pad_length=3))
    yield "control", frames(PingFrame(0, opaque_data=b"12345678"), SettingsFrame(0, settings={4: 1 << 20, 3: 10}),
                            WindowUpdateFrame(0, window_increment=1000), PriorityFrame(3, depends_on=1),
                            SettingsFrame(0, flags=["ACK"]))
    yield "reset-and-window", frames(HeadersFrame(1, data=block, flags=["END_HEADERS"]),
                                     WindowUpdateFrame(1, window_increment=5), RstStreamFrame(1, error_code=8),
                                     HeadersFrame(3, data=encoder.encode(REQUEST), flags=["END_HEADERS", "END_STREAM"]))
    yield "hpack-blocks", b"\xff\x20" + hpack.Encoder().encode(REQUEST) + hpack.Encoder().encode(REQUEST)
    # What a replica sends a mesh that has opened streams 1, 3 and 5 (the marker 0xFE first).
    answers = hpack.Encoder()
    response = [(":status", "200"), ("content-type", "application/grpc")]
    yield "replica-answers", b"\xfe" + frames(
        HeadersFrame(1, data=answers.encode(response), flags=["END_HEADERS"]), DataFrame(1, data=BODY),
        HeadersFrame(1, data=answers.encode([("grpc-status", "0")]), flags=["END_HEADERS", "END_STREAM"]),
        HeadersFrame(3, data=answers.encode([("grpc-status", "14")] + response), flags=["END_HEADERS", "END_STREAM"]),
        WindowUpdateFrame(5, window_increment=100), RstStreamFrame(5, error_code=7),
        SettingsFrame(0, settings={4: 10, 5: 16384}), PingFrame(0, flags=["ACK"], opaque_data=b"12345678"))


if __name__ == "__main__":
    CORPUS.mkdir(parents=True, exist_ok=True)
    for name, data in seeds():
        (CORPUS / f"seed-{name}").write_bytes(data)
        print(f"wrote {CORPUS / f'seed-{name}'} ({len(data)} bytes)")
