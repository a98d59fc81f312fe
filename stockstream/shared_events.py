"""Server events sent alike to many clients, framed once for all of them.

A live candle goes to every client of its stream: its JSON is written once,
and each transport's frame of it is built on first use and then shared, as
an Update's frames are.
"""

from __future__ import annotations

from .updates import ws_text_frame


class SharedEvent:
    """One event (`name` and its JSON object `body`) for many recipients."""

    __slots__ = ("_sio_frame", "_sio_payload", "_ws_frame", "body", "name")

    def __init__(self, name: str, body: bytes) -> None:
        if not body.startswith(b"{"):
            raise ValueError("an event body is a JSON object")
        self.name = name
        self.body = body
        self._sio_payload: str | None = None
        self._sio_frame: bytes | None = None
        self._ws_frame: bytes | None = None

    @property
    def sio_payload(self) -> str:
        """The Socket.IO packet text: an EVENT `name` carrying the body."""
        if self._sio_payload is None:
            self._sio_payload = f'2["{self.name}",' + self.body.decode() + "]"
        return self._sio_payload

    @property
    def sio_frame(self) -> bytes:
        """The WebSocket frame of the Engine.IO message carrying `sio_payload`."""
        if self._sio_frame is None:
            self._sio_frame = ws_text_frame(b"4" + self.sio_payload.encode())
        return self._sio_frame

    @property
    def ws_frame(self) -> bytes:
        """The `/live-price` frame: the body with `"type": name` first."""
        if self._ws_frame is None:
            rest = self.body[1:]
            separator = b"," if rest != b"}" else b""
            self._ws_frame = ws_text_frame(b'{"type":"' + self.name.encode() + b'"' + separator + rest)
        return self._ws_frame

    def __repr__(self) -> str:
        return f"SharedEvent({self.name!r}, {self.body[:80]!r})"
