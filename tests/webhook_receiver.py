"""A real HTTP receiver on loopback that verifies Standard Webhooks signatures on its own.

The verification is written from the spec, not imported from ``worker.webhooks``: the signed
content is ``{webhook-id}.{webhook-timestamp}.{raw body}``, the key is the base64 part of the
``whsec_`` secret, and ``webhook-signature`` is a space-separated list of ``v1,<base64>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOLERANCE_S = 300  # the spec's replay window


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    msg_id, timestamp = headers.get("webhook-id"), headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature", "")
    if not msg_id or not timestamp or abs(time.time() - int(timestamp)) > TOLERANCE_S:
        return False
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for candidate in signatures.split(" "):
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: dict[str, Any]
    verified: bool
    answered: int
    at: float  # time.monotonic()


class Receiver:
    """Answers 500 to the first ``fail_first`` requests, then 200 (401 if unsigned)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.secret = ""  # set once the webhook is registered
        self.fail_first = fail_first
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                ok = bool(receiver.secret) and verify(receiver.secret, headers, raw)
                with receiver._lock:
                    failing = len(receiver.received) < receiver.fail_first
                    code = 401 if not ok else 500 if failing else 200
                    receiver.received.append(
                        Received(headers, json.loads(raw), ok, code, time.monotonic())
                    )
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/trainrun"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def of_type(self, event: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.body.get("type") == event]
