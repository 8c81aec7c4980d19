"""A stand-in for `python -m vllm.entrypoints.openai.api_server`, for the supervision tests.

Put tests/fake_vllm first on PYTHONPATH and bendi's launcher runs this instead of vLLM: same
command line, same HTTP (/health, /v1/models, /v1/chat/completions and /v1/completions with and
without streaming, /v1/embeddings, /tokenize), started in a fraction of a second. The answer
echoes the last user message word by word, so tests can check what arrived. Knobs (environment):

    FAKE_VLLM_READY_DELAY   seconds before the port opens (a model loading)
    FAKE_VLLM_EXIT          exit with this code right away (a start that fails)
    FAKE_VLLM_TOKEN_DELAY   seconds between streamed tokens
    FAKE_VLLM_REASONING     "1": stream reasoning_content first (an R1-style model)
    FAKE_VLLM_RECORD        write the argv and environment here as JSON
    FAKE_VLLM_CHILD         "1": start a child process, as vLLM starts its engine core
    FAKE_VLLM_IGNORE_TERM   "1": ignore SIGTERM (a process that hangs on shutdown)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--reasoning-parser")
    parser.add_argument("--runner")
    args, _unknown = parser.parse_known_args()

    if os.environ.get("FAKE_VLLM_RECORD"):
        with open(os.environ["FAKE_VLLM_RECORD"], "w", encoding="utf-8") as fh:
            json.dump({"argv": sys.argv, "env": dict(os.environ), "pid": os.getpid()}, fh)
    print(f"fake vLLM: model {args.model} as {args.served_model_name}", flush=True)
    if os.environ.get("FAKE_VLLM_EXIT"):
        print("fake vLLM: failing on purpose (FAKE_VLLM_EXIT)", file=sys.stderr, flush=True)
        sys.exit(int(os.environ["FAKE_VLLM_EXIT"]))
    if os.environ.get("FAKE_VLLM_IGNORE_TERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.environ.get("FAKE_VLLM_CHILD") == "1":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        print(f"fake vLLM: engine core pid {child.pid}", flush=True)
    time.sleep(float(os.environ.get("FAKE_VLLM_READY_DELAY", "0")))

    state = {"name": args.served_model_name, "max_len": args.max_model_len,
             "reasoning": os.environ.get("FAKE_VLLM_REASONING") == "1",
             "delay": float(os.environ.get("FAKE_VLLM_TOKEN_DELAY", "0")),
             "pooling": args.runner == "pooling"}
    server = ThreadingHTTPServer((args.host, args.port), _handler(state))
    server.daemon_threads = True
    print(f"fake vLLM: listening on {args.host}:{args.port}", flush=True)
    server.serve_forever()


def _words(text: str) -> list[str]:
    return [w + " " for w in text.split()] or ["ok "]


def _handler(state: dict[str, Any]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            print("fake vLLM:", format % args, flush=True)

        def _json(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/health":
                self._json(200, {})
            elif self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [
                    {"id": state["name"], "object": "model", "max_model_len": state["max_len"]}]})
            else:
                self._json(404, {"error": {"message": "not found", "code": 404}})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            if body.get("model") != state["name"]:
                self._json(404, {"error": {"message": f"The model `{body.get('model')}` does not "
                                           "exist.", "type": "NotFoundError", "code": 404}})
                return
            if self.path == "/v1/chat/completions":
                messages = body.get("messages") or []
                last = next((m for m in reversed(messages) if m.get("role") == "user"), {})
                content = last.get("content")
                if not isinstance(content, str):
                    self._json(400, {"error": {"message": "content must be a string",
                                               "type": "BadRequestError", "code": 400}})
                    return
                self._generate(body, _words(content), chat=True)
            elif self.path == "/v1/completions":
                self._generate(body, _words(str(body.get("prompt", ""))), chat=False)
            elif self.path == "/v1/embeddings":
                inputs = body.get("input")
                inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
                data = [{"object": "embedding", "index": i, "embedding": _vector(t)}
                        for i, t in enumerate(inputs)]
                tokens = sum(len(t.split()) for t in inputs)
                self._json(200, {"object": "list", "data": data,
                                 "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
            elif self.path == "/tokenize":
                words = str(body.get("prompt", "")).split()
                self._json(200, {"tokens": [len(w) for w in words], "count": len(words)})
            else:
                self._json(404, {"error": {"message": "not found", "code": 404}})

        def _generate(self, body: dict[str, Any], words: list[str], *, chat: bool) -> None:
            limit = body.get("max_tokens") or 64
            out = words[:limit]
            finish = "length" if len(words) > limit else "stop"
            prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", [])) \
                if chat else len(str(body.get("prompt", "")).split())
            reasoning = ["thinking ", "first "] if chat and state["reasoning"] else []
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(out) + len(reasoning),
                     "total_tokens": prompt_tokens + len(out) + len(reasoning)}
            if not body.get("stream"):
                if chat:
                    message = {"role": "assistant", "content": "".join(out),
                               "reasoning_content": "".join(reasoning) or None}
                    choice = {"index": 0, "message": message, "finish_reason": finish}
                else:
                    choice = {"index": 0, "text": "".join(out), "finish_reason": finish}
                self._json(200, {"id": "fake", "choices": [choice], "usage": usage})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in reasoning:
                self._event({"choices": [{"index": 0, "delta": {"reasoning_content": piece}}]})
            for i, piece in enumerate(out):
                time.sleep(state["delay"])
                last = i == len(out) - 1
                if chat:
                    choice = {"index": 0, "delta": {"content": piece},
                              "finish_reason": finish if last else None}
                else:
                    choice = {"index": 0, "text": piece, "finish_reason": finish if last else None}
                self._event({"choices": [choice]})
            if (body.get("stream_options") or {}).get("include_usage"):
                self._event({"choices": [], "usage": usage})
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")

        def _event(self, data: dict[str, Any]) -> None:
            self._chunk(b"data: " + json.dumps({"id": "fake", **data}).encode() + b"\n\n")

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    return Handler


def _vector(text: str, dim: int = 8) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    raw = [b - 128.0 for b in digest[:dim]]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


if __name__ == "__main__":
    main()
