#!/usr/bin/env python3
"""Writes the hand-made seeds under fuzz/seeds/<target>/. Run from anywhere:

    python3 fuzz/seeds/gen_seeds.py

Input format of the `frame` and `stream` targets (see fuzz/src/lib.rs):
flags byte (bit 0: role for `frame` -- 0 server, 1 client; "we sent close first" for
`stream`; bits 1-3: number of cuts), then that many little-endian u16 cut positions,
then the wire bytes.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def frame(opcode, payload, fin=True, mask=None, force_len=None):
    """One frame; `mask` is a 4-byte key (client frames) or None; `force_len` picks the
    length encoding (7, 16 or 64 bits) to make non-minimal encodings."""
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    enc = force_len or (7 if n < 126 else 16 if n < 65536 else 64)
    if enc == 7:
        head = bytes([b0, mbit | n])
    elif enc == 16:
        head = bytes([b0, mbit | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack(">Q", n)
    if mask:
        head += mask
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + payload


def fuzz_input(bit0, cuts, wire):
    assert len(cuts) <= 7
    out = bytes([(len(cuts) << 1) | int(bit0)])
    for c in cuts:
        out += struct.pack("<H", c)
    return out + wire


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


K = bytes([0x37, 0xFA, 0x21, 0x3D])  # RFC 6455 §5.7 mask key
K2 = bytes([1, 2, 3, 4])

# RFC 6455 §5.7: a single masked text frame "Hello".
masked_hello = frame(0x1, b"Hello", mask=K)
assert masked_hello == bytes.fromhex("818537fa213d7f9f4d5158")
# §5.4: "Hel" + ping + "lo" -- a fragmented text message with a control frame between.
fragmented = (
    frame(0x1, b"Hel", fin=False, mask=K)
    + frame(0x9, b"ping", mask=K2)
    + frame(0x0, b"lo", mask=K)
)
# Close 1000 "bye".
close = frame(0x8, struct.pack(">H", 1000) + b"bye", mask=K2)
# Binary with a 16-bit length, in three fragments of mixed sizes, then a pong.
binary = (
    frame(0x2, bytes(range(200)), fin=False, mask=K2)
    + frame(0x0, bytes(300), fin=False, mask=K)
    + frame(0x0, b"end", mask=K2)
    + frame(0xA, b"", mask=K)
)
# Multi-byte UTF-8 split across fragments ("κόσμε 🎉"), cut inside characters.
utf8 = "κόσμε 🎉".encode()
split_utf8 = frame(0x1, utf8[:3], fin=False, mask=K) + frame(0x0, utf8[3:], mask=K2)
# Non-minimal 64-bit length for a 5-byte payload.
long_len = frame(0x2, b"12345", mask=K, force_len=64)

for name, wire, cuts in [
    ("masked-text", masked_hello, []),
    ("masked-text-cut", masked_hello, [1, 3, 7]),
    ("fragmented-ping", fragmented, [2, 9, 15, 22]),
    ("close", close, []),
    ("binary-126", binary, [4, 100, 250, 520]),
    ("split-utf8", split_utf8, [7, 8, 12, 16]),
    ("len64", long_len, [3]),
]:
    write("frame", name, fuzz_input(False, cuts, wire))
    write("stream", name, fuzz_input(False, cuts, wire))

# Client-role frames for `frame` (unmasked, as a server sends them).
write("frame", "client-text", fuzz_input(True, [], frame(0x1, b"Hello")))
write(
    "frame",
    "client-mixed",
    fuzz_input(True, [5], frame(0x2, bytes(130)) + frame(0x9, b"") + frame(0x8, b"")),
)
# `stream`: the peer's close answers ours (bit 0), then trailing bytes are discarded.
write("stream", "close-after-ours", fuzz_input(True, [4], close + masked_hello))
write("stream", "messages-then-close", fuzz_input(False, [11, 30], masked_hello + fragmented + close))

# RFC 6455 §1.3 sample handshake request.
sample_request = (
    b"GET /chat HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)
write("handshake", "rfc6455-1.3-request", sample_request)
# A valid 101: `@ACCEPT@` is replaced by the target with the right accept key.
write(
    "handshake",
    "response-101",
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: @ACCEPT@\r\n"
    b"Sec-WebSocket-Protocol: chat\r\n"
    b"\r\n",
)
# The literal §1.3 response (its accept never matches a random key).
write(
    "handshake",
    "rfc6455-1.3-response",
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    b"Sec-WebSocket-Protocol: chat\r\n"
    b"\r\n",
)
