"""A scripted OpenAI-compatible server on 127.0.0.1 for the judge's failure paths (429, 5xx, a wrong key), which a
real server does not produce on demand. The happy path is tested against real servers (test_winrate_server.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, dict[str, Any] | str, dict[str, str]]
"""(status, JSON body or raw text, headers)."""


def completion(text: str) -> Reply:
    return 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}, {}


class Scripted:
    """Serves /v1/models and answers /v1/chat/completions with ``answer(request body)``; records every request."""

    def __init__(self, answer: Callable[[dict[str, Any]], Reply], models=("judge-x",), key: str | None = None):
        self.answer, self.models, self.key = answer, list(models), key
        self.requests: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, reply: Reply) -> None:
                status, body, headers = reply
                data = (json.dumps(body) if isinstance(body, dict) else body).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                if owner.key and self.headers.get("Authorization") != f"Bearer {owner.key}":
                    self._send((401, {"error": {"message": "bad key"}}, {}))
                    return False
                return True

            def do_GET(self):
                if self._authorised():
                    self._send((200, {"object": "list", "data": [{"id": m} for m in owner.models]}, {}))

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(body)
                if self._authorised():
                    self._send(owner.answer(body))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Scripted:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def prefers_longer(body: dict[str, Any]) -> Reply:
    """A judge that picks the longer output (ties on equal length): a pure length bias."""
    text = body["messages"][-1]["content"]
    first = text.split('Assistant "m":\n"""\n', 1)[1].split('\n"""', 1)[0]
    second = text.split('Assistant "M":\n"""\n', 1)[1].split('\n"""', 1)[0]
    return completion("m" if len(first) > len(second) else "M" if len(second) > len(first) else "tie")
