"""An engine server that answers too much: the router refuses to hold it, and says so.

The engine here is a fake on purpose (a real one cannot be made to send a
megabyte for a chat answer): a plain HTTP server on a free loopback port
speaking just enough of the OpenAI API to be added, whose chat answer is
larger than the router's ``router.max_body_bytes``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest
from processes import free_port, run_anyserve

LIMIT = 65536


class _Oversized(BaseHTTPRequestHandler):
    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(b"{}")
        else:
            self._send(json.dumps({"object": "list", "data": [{"id": "flood", "object": "model"}]}).encode())

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._send(b'{"padding": "' + b"x" * (4 * LIMIT) + b'"}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flooding_engine() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Oversized)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_engine_answer_over_the_body_limit_is_a_502(flooding_engine, tmp_path):
    config = tmp_path / "anyserve.toml"
    config.write_text(f'[router]\nmax_body_bytes = {LIMIT}\n\n[[router.engines]]\nurl = "{flooding_engine}"\n')
    port = free_port()
    router = run_anyserve("router", "--port", str(port), "--config", str(config))
    try:
        router.wait_for(" ready at ")
        base = f"http://127.0.0.1:{port}"
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="-", max_retries=0)
        with client, pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="flood", messages=[{"role": "user", "content": "hi"}])
        assert caught.value.status_code == 502
        assert f"larger than {LIMIT} bytes" in caught.value.body["message"]
        # The router is fine afterwards: it still answers.
        assert httpx.get(f"{base}/v1/models").json()["data"][0]["id"] == "flood"
    finally:
        router.kill_group()
