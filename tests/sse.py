"""A small synchronous Server-Sent Events reader for tests (the SDK has its own client)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Event:
    event: str = "message"
    data: str = ""
    id: str | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


def parse_lines(lines: Iterator[str]) -> Iterator[Event]:
    """Events from SSE lines (per the HTML spec's field rules); comment-only blocks are yielded
    as events with ``event == ""`` so tests can see keep-alives."""
    current = Event()
    data: list[str] = []
    seen = False
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data or current.id is not None or current.event != "message":
                current.data = "\n".join(data)
                yield current
            elif seen and current.comments:
                yield Event(event="", comments=current.comments)
            current, data, seen = Event(), [], False
            continue
        seen = True
        if line.startswith(":"):
            current.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            current.event = value
        elif name == "id":
            current.id = value
        # `retry` and unknown fields are ignored here


def stream(
    client: httpx.Client,
    url: str,
    last_event_id: str | None = None,
    timeout: float = 30.0,
) -> Iterator[Event]:
    """GET ``url`` as an event stream and yield its events until the server closes it."""
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    with client.stream("GET", url, headers=headers, timeout=timeout) as response:
        response.raise_for_status()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield from parse_lines(response.iter_lines())
