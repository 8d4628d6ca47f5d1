"""A deliberately broken model server, for proving the contract suite can fail.

It forwards every request to a real server and corrupts the answers in one named way:
- `prob_offset`: V2 `infer` probabilities shifted by +1e-3 (labels untouched);
- `missing_column_500`: a request the real server rejects for a missing column gets a 500.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.contract import clients

FAULTS = ("prob_offset", "missing_column_500")


def _corrupt(fault: str, path: str, status: int, body: bytes) -> tuple[int, bytes]:
    if fault == "prob_offset" and path.endswith("/infer") and status == 200:
        doc: dict[str, Any] = json.loads(body)
        for output in doc["outputs"]:
            if output["name"] == "probabilities":
                output["data"] = [p + 1e-3 for p in output["data"]]
        return status, json.dumps(doc).encode()
    if fault == "missing_column_500" and status == 400 and b"missing" in body.lower():
        return 500, b'{"error_code": "INTERNAL_ERROR", "message": "KeyError"}'
    return status, body


class FaultProxy:
    def __init__(self, *, upstream: str, fault: str) -> None:
        assert fault in FAULTS, fault
        client = clients.client(upstream, timeout=30)

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length", "connection")
                }
                answer = client.request(self.command, self.path, content=body, headers=headers)
                status, payload = _corrupt(fault, self.path, answer.status_code, answer.content)
                self.send_response(status)
                self.send_header("Content-Type", answer.headers.get("content-type", "text/plain"))
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _forward

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
