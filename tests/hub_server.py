"""A loopback stand-in for the Hugging Face Hub: the few endpoints that an upload uses, recording what it receives.

No pip-installable Hub server accepts uploads, so the publishing tests point ``HfApi(endpoint=hub.url)`` at this one::

    with FakeHub() as hub:
        HfApi(endpoint=hub.url).create_repo("alice/model", exist_ok=True)
        ...
        hub.commits[0].files  # {"README.md": b"...", ...}

Endpoints: ``POST /api/repos/create``, ``POST /api/validate-yaml``, ``POST /api/models/{id}/preupload/{rev}`` (every
file is "regular": its content travels base64-encoded in the commit), ``POST /api/models/{id}/branch/{branch}`` and
``POST /api/models/{id}/commit/{rev}`` (ndjson). Anything else answers 404 and is recorded in ``unexpected``.
``refuse`` makes an endpoint answer an error status instead, as the real Hub does for a token without write access.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

_REPO = r"(?P<repo>[^/]+/[^/]+)"


@dataclass
class Commit:
    """One commit received: its repository, revision, title, description and files (path -> bytes)."""

    repo_id: str
    revision: str
    summary: str
    description: str
    files: dict[str, bytes]
    oid: str


@dataclass
class Request:
    """One request received (headers lower-cased, kept in memory only, for the tests' assertions)."""

    method: str
    path: str
    headers: dict[str, str]
    status: int = 0


@dataclass
class FakeHub:
    """The server, its state and its records. Use as a context manager; ``url`` is its endpoint.

    Attributes:
        refuse: ``{endpoint name: (status, message)}`` to make ``"create"``, ``"preupload"``, ``"branch"`` or
            ``"commit"`` fail like the Hub does (JSON ``{"error": message}`` and ``X-Error-Message``).
    """

    refuse: dict[str, tuple[int, str]] = field(default_factory=dict)
    repos: dict[str, dict[str, Any]] = field(default_factory=dict)
    branches: dict[str, set[str]] = field(default_factory=dict)
    commits: list[Commit] = field(default_factory=list)
    validated: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    url: str = ""

    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                hub._handle(self, "GET")

            def do_POST(self) -> None:
                hub._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    # ------------------------------------------------------------------------------------------------ handling
    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path = unquote(urlsplit(handler.path).path)
        record = Request(method, path, {k.lower(): v for k, v in handler.headers.items()})
        self.requests.append(record)
        body = _read_body(handler)
        routes = [
            ("POST", r"/api/repos/create", self._create),
            ("POST", r"/api/validate-yaml", self._validate_yaml),
            ("POST", rf"/api/models/{_REPO}/preupload/(?P<rev>.+)", self._preupload),
            ("POST", rf"/api/models/{_REPO}/branch/(?P<branch>.+)", self._branch),
            ("POST", rf"/api/models/{_REPO}/commit/(?P<rev>.+)", self._commit),
        ]
        for route_method, pattern, action in routes:
            match = re.fullmatch(pattern, path)
            if route_method == method and match:
                status, payload = action(body, **match.groupdict())
                break
        else:
            self.unexpected.append(f"{method} {path}")
            status, payload = 404, {"error": f"fake hub: no route for {method} {path}"}
        record.status = status
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        if status >= 400 and "error" in payload:
            handler.send_header("X-Error-Message", str(payload["error"]))
        handler.end_headers()
        handler.wfile.write(data)

    def _refused(self, name: str) -> tuple[int, dict[str, Any]] | None:
        if name in self.refuse:
            status, message = self.refuse[name]
            return status, {"error": message}
        return None

    def _create(self, body: bytes) -> tuple[int, dict[str, Any]]:
        if refused := self._refused("create"):
            return refused
        payload = json.loads(body)
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        if repo_id in self.repos:
            return 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}
        self.repos[repo_id] = payload
        self.branches[repo_id] = {"main"}
        return 200, {"url": f"{self.url}/{repo_id}", "name": repo_id}

    def _validate_yaml(self, body: bytes) -> tuple[int, dict[str, Any]]:
        content = json.loads(body)["content"]
        self.validated.append(content)
        match = re.match(r"^---\n(.*?)\n---\n", content, flags=re.DOTALL)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as error:
            return 400, {"errors": [{"message": f"invalid YAML: {error}"}], "error": "invalid YAML"}
        if not isinstance(metadata, dict):
            return 400, {"errors": [{"message": "metadata must be a mapping"}], "error": "invalid metadata"}
        return 200, {"errors": [], "warnings": []}

    def _preupload(self, body: bytes, repo: str, rev: str) -> tuple[int, dict[str, Any]]:
        if refused := self._refused("preupload"):
            return refused
        if repo not in self.repos:
            return 404, {"error": "Repository not found"}
        files = json.loads(body)["files"]
        return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}

    def _branch(self, body: bytes, repo: str, branch: str) -> tuple[int, dict[str, Any]]:
        if refused := self._refused("branch"):
            return refused
        if repo not in self.repos:
            return 404, {"error": "Repository not found"}
        if branch in self.branches[repo]:
            return 409, {"error": "Reference already exists"}
        self.branches[repo].add(branch)
        return 200, {}

    def _commit(self, body: bytes, repo: str, rev: str) -> tuple[int, dict[str, Any]]:
        if refused := self._refused("commit"):
            return refused
        if repo not in self.repos:
            return 404, {"error": "Repository not found"}
        if rev not in self.branches[repo]:
            return 404, {"error": f"Invalid rev id: {rev}"}
        header: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        for line in body.splitlines():
            item = json.loads(line)
            if item["key"] == "header":
                header = item["value"]
            elif item["key"] == "file":
                assert item["value"]["encoding"] == "base64", item["value"]
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            else:
                return 400, {"error": f"fake hub: unsupported commit operation {item['key']}"}
        oid = hashlib.sha1(body).hexdigest()
        self.commits.append(Commit(repo, rev, header.get("summary", ""), header.get("description", ""), files, oid))
        return 200, {"commitUrl": f"{self.url}/{repo}/commit/{oid}", "commitOid": oid, "success": True}


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().strip(), 16)
            if size == 0:
                handler.rfile.readline()
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
