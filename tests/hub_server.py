"""A Hugging Face Hub on 127.0.0.1 for download tests: the URL layout huggingface_hub's client calls.

`GET /api/models/<repo>/revision/<rev>` (repo info: the commit sha), `GET /api/models/<repo>/tree/<sha>` (the file
list, LFS files with their sha256), `HEAD|GET /<repo>/resolve/<sha>/<file>` (X-Repo-Commit, ETag / X-Linked-Etag,
Content-Length, then the bytes). Unknown repos answer 404 RepoNotFound, gated ones 401 GatedRepo, as the Hub does.
`break_after` cuts a weights file's body in half, then stops the server (the server going away mid-download).
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    """Serves `repos` (repo id -> {path in repo: bytes}); `gated` repos refuse; `requests` records (method, path)."""

    def __init__(self, repos: dict[str, dict[str, bytes]], gated: set[str] = frozenset(), break_weights: bool = False):
        self.repos, self.gated, self.break_weights = repos, set(gated), break_weights
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                hub._answer(self, body=True)

            def do_HEAD(self):  # noqa: N802
                hub._answer(self, body=False)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
        self.server.server_close()

    def files_fetched(self) -> set[str]:
        """Files whose bytes were asked for (GET on resolve/)."""
        return {p.split("/resolve/", 1)[1].split("/", 1)[1] for m, p in self.requests if m == "GET" and "/resolve/" in p}

    # ---- answering -----------------------------------------------------------------------------------------
    def _answer(self, req: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(req.path).path)
        self.requests.append((req.command, path))
        if path.startswith("/api/models/"):
            rest = path[len("/api/models/"):]
            for kind in ("/revision/", "/tree/"):
                if kind in rest:
                    repo = rest.split(kind, 1)[0]
                    if self._refused(req, repo, body):
                        return
                    if kind == "/revision/":
                        info = {"id": repo, "sha": COMMIT, "siblings": [{"rfilename": p} for p in self.repos[repo]]}
                        return self._send(req, 200, json.dumps(info).encode(), body, {"Content-Type": "application/json"})
                    return self._send(req, 200, json.dumps(self._tree(repo)).encode(), body,
                                      {"Content-Type": "application/json"})
        if "/resolve/" in path:
            repo, rest = path.lstrip("/").split("/resolve/", 1)
            if self._refused(req, repo, body):
                return
            _, name = rest.split("/", 1)
            data = self.repos[repo].get(name)
            if data is None:
                return self._send(req, 404, b"", body, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT})
            headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{_git_oid(data)}"'}
            if _is_lfs(name):
                headers.update({"X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"',
                                "X-Linked-Size": str(len(data))})
            if body and self.break_weights and name.endswith(".safetensors"):
                return self._break(req, data, headers)
            return self._send(req, 200, data, body, headers)
        self._send(req, 404, b"", body, {})

    def _refused(self, req, repo: str, body: bool) -> bool:
        if repo in self.gated:
            self._send(req, 401, b'{"error": "gated"}', body,
                       {"X-Error-Code": "GatedRepo", "X-Error-Message": f"Access to model {repo} is restricted."})
            return True
        if repo not in self.repos:
            self._send(req, 404, b'{"error": "Repository not found"}', body,
                       {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
            return True
        return False

    def _tree(self, repo: str) -> list[dict]:
        entries = []
        for name, data in self.repos[repo].items():
            entry = {"type": "file", "path": name, "size": len(data), "oid": _git_oid(data)}
            if _is_lfs(name):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        return entries

    def _send(self, req, status: int, data: bytes, body: bool, headers: dict) -> None:
        req.send_response(status)
        for k, v in {**headers, "Content-Length": str(len(data))}.items():
            req.send_header(k, v)
        req.end_headers()
        if body:
            req.wfile.write(data)

    def _break(self, req, data: bytes, headers: dict) -> None:
        """Half of the bytes, then the connection and the server go away."""
        req.send_response(200)
        for k, v in {**headers, "Content-Length": str(len(data))}.items():
            req.send_header(k, v)
        req.end_headers()
        req.wfile.write(data[: len(data) // 2])
        req.wfile.flush()
        req.close_connection = True
        threading.Thread(target=self.stop, daemon=True).start()


def _is_lfs(name: str) -> bool:
    return name.endswith((".safetensors", ".bin"))


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def tiny_repo(folder: Path) -> dict[str, bytes]:
    """A 1-layer GPT-2 saved with save_pretrained, plus tokenizer files and files a download must never fetch."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0,
                        eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    files.update({
        "tokenizer.json": b'{"version": "1.0", "model": {"type": "BPE", "vocab": {}, "merges": []}}',
        "tokenizer_config.json": b'{"model_max_length": 32}',
        "pytorch_model.bin": b"pickle: never fetched",  # pickle weights: never downloaded
        "README.md": b"# tiny\n",
        "onnx/model.onnx": b"never fetched",
    })
    return files
