"""A Server-Sent Events parser fed line by line, shared by the sync and async clients.

It follows the WHATWG event-stream rules that matter here: ``field: value`` lines, comments
starting with ``:`` (keep-alives), multi-line ``data``, and dispatch on a blank line.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSentEvent:
    event: str
    data: str
    id: str | None
    retry: int | None = None


class SSEParser:
    """Feed it decoded lines (without their line ending); it returns an event on a blank line."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._retry: int | None = None
        self.last_event_id: str | None = None
        self.retry: int | None = None  # the reconnection delay the server asked for, in ms

    def feed(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):  # a comment, e.g. ": keep-alive"
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = self.retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if self._id is not None:
            self.last_event_id = self._id
        if not self._data and not self._event:
            self._id, self._retry = None, None
            return None
        event = ServerSentEvent(
            event=self._event or "message",
            data="\n".join(self._data),
            id=self._id if self._id is not None else self.last_event_id,
            retry=self._retry,
        )
        self._event, self._data, self._id, self._retry = "", [], None, None
        return event
