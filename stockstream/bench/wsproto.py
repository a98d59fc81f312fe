"""The client half of RFC 6455, only as much as the load generator needs.

Written by hand rather than taken from a WebSocket library because the load
generator must stay far cheaper per message than the server it measures: no
per-frame objects, no compression, no extra copies.
"""

from __future__ import annotations

import base64
import hashlib
import os

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

# A handshake answer larger than this is not a WebSocket server.
MAX_HANDSHAKE_BYTES = 16 * 1024
# Nothing the servers send (updates, acks) comes close; a bigger frame means a broken peer.
MAX_FRAME_BYTES = 16 * 1024 * 1024


class HandshakeError(Exception):
    """The server did not switch protocols as RFC 6455 requires."""


def new_key() -> bytes:
    return base64.b64encode(os.urandom(16))


def accept_for(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


HEADER_SETS = ("few", "browser")

# What a desktop browser sends besides the handshake's own headers, with a
# cookie of a typical site's size (analytics and a session, ~400 bytes): what
# a server may hold per connection grows with it.
BROWSER_HEADERS = (
    "Pragma: no-cache\r\n"
    "Cache-Control: no-cache\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36\r\n"
    "Origin: https://{host}\r\n"
    "Accept-Encoding: gzip, deflate, br, zstd\r\n"
    "Accept-Language: en-GB,en-US;q=0.9,en;q=0.8,de;q=0.7\r\n"
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    "Sec-Fetch-Dest: empty\r\n"
    "Sec-Fetch-Mode: websocket\r\n"
    "Sec-Fetch-Site: same-origin\r\n"
    "Cookie: _ga=GA1.1.1234567890.1733480000; _ga_ABCDEF1234=GS1.1.1733480000.3.1.1733480123.0.0.0; "
    "_gid=GA1.2.987654321.1733480000; session=eyJ1c2VyIjoiYmVuY2gtdXNlci0wMDEiLCJyb2xlcyI6WyJ2aWV3ZXIiXSwi"
    "ZXhwIjoxNzMzNTY2NDAwfQ.c2lnbmF0dXJlLWZvci10aGUtc2Vzc2lvbi1jb29raWUtb2YtYS1icm93c2Vy; "
    "consent=analytics%3Dtrue%26marketing%3Dfalse%26v%3D2; theme=dark; locale=en-GB; "
    "csrftoken=Q2hKd3JvYlpUUW9wR2x1aWR2cW9hVE5yQ3pwS0x6dWs; _hjSessionUser_123456=eyJpZCI6IjAwMDAwMDAwLTAwMDAt"
    "MDAwMC0wMDAwLTAwMDAwMDAwMDAwMCJ9\r\n"
)


def handshake_request(host_header: str, path: str, key: bytes, headers: str = "few") -> bytes:
    """The upgrade request; `headers` "browser" adds what a browser sends."""
    # With "few", no Sec-WebSocket-Extensions: compression would make the
    # server pay deflate costs a real browser client might not ask for, and us
    # inflate. (Servers here decline it either way.)
    extra = BROWSER_HEADERS.format(host=host_header) if headers == "browser" else "User-Agent: stockstream-bench\r\n"
    return (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {host_header}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        f"{extra}"
        "\r\n"
    ).encode()


def check_handshake_response(head: bytes, key: bytes) -> None:
    """Raise HandshakeError unless `head` (up to the blank line) accepts `key`."""
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or status[1] != b"101":
        raise HandshakeError(f"server answered {lines[0][:80].decode(errors='replace')!r} instead of 101")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"sec-websocket-accept") != accept_for(key):
        raise HandshakeError("wrong Sec-WebSocket-Accept")


def _mask(key: bytes, data: bytes) -> bytes:
    # XOR as one big integer: far faster in CPython than a byte loop.
    n = len(data)
    if n == 0:
        return data
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def encode_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One final, masked client->server frame (clients must mask, RFC 6455 §5.3)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    key = os.urandom(4)
    return header + key + _mask(key, payload)


def close_frame(code: int = 1000) -> bytes:
    return encode_frame(code.to_bytes(2, "big"), OP_CLOSE)
