"""A loopback stand-in for the Hugging Face Hub: the few endpoints that an upload and a download use, recording what
it receives.

No pip-installable Hub server exists, so the publishing and conversion tests point ``HfApi(endpoint=hub.url)`` /
``hf_hub_download(..., endpoint=hub.url)`` at this one (# offline: loopback only)::

    with FakeHub() as hub:
        HfApi(endpoint=hub.url).create_repo("alice/model", exist_ok=True)
        ...
        hub.commits[0].files  # {"README.md": b"...", ...}

        hub.add_file("alice/model", "weights.pth", data)               # on branch main
        hub.add_file("alice/model", "weights.pth", other, revision="v1")  # another branch or tag
        hf_hub_download("alice/model", "weights.pth", endpoint=hub.url)  # offline: the loopback Hub

Upload endpoints: ``POST /api/repos/create``, ``POST /api/validate-yaml``, ``POST /api/models/{id}/preupload/{rev}``
(every file is "regular": its content travels base64-encoded in the commit), ``POST /api/models/{id}/branch/{branch}``
and ``POST /api/models/{id}/commit/{rev}`` (ndjson).

Download endpoints (what huggingface_hub 2.x ``hf_hub_download``, ``HfApi.list_repo_files`` and
``HfApi.model_info`` call), for the files given to :meth:`FakeHub.add_file`: ``HEAD``/``GET
/{id}/resolve/{rev}/{path}`` (headers ``X-Repo-Commit``, ``ETag`` = the file's sha256, ``Content-Length``; no Xet
headers, so the plain HTTP download is used), ``GET /api/models/{id}/tree/{rev}[/{path}]`` (one page) and ``GET
/api/models/{id}[/revision/{rev}]``. Unknown repositories, revisions and files answer 404 with the ``X-Error-Code``
(``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) that huggingface_hub turns into its typed errors. A
revision is a branch or tag name given to ``add_file`` or the commit hash it currently points to.

Anything else answers 404 and is recorded in ``unexpected``. ``refuse`` makes an endpoint answer an error status
instead, as the real Hub does for a token without write access.
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
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

_REPO = r"(?P<repo>[^/]+/[^/]+)"


@dataclass
class Response:
    """A response other than JSON: status, headers and body (the body is not sent for HEAD)."""

    status: int
    headers: dict[str, str]
    body: bytes = b""


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
    #: Files to download: ``{repo_id: {revision name: {path: bytes}}}`` (:meth:`add_file`).
    files: dict[str, dict[str, dict[str, bytes]]] = field(default_factory=dict)

    def add_file(self, repo_id: str, path: str, data: bytes, revision: str = "main") -> str:
        """Serve ``data`` as ``path`` of model repository ``repo_id`` at ``revision`` (a branch or tag; created on
        first use, the repository too). Returns the commit hash the revision now points to."""
        self.repos.setdefault(repo_id, {"name": repo_id})
        self.branches.setdefault(repo_id, {"main"})
        self.files.setdefault(repo_id, {}).setdefault(revision, {})[path] = bytes(data)
        return self.commit_of(repo_id, revision)

    def commit_of(self, repo_id: str, revision: str) -> str:
        """The commit hash a revision of ``repo_id`` points to: a digest of its files (it changes with them)."""
        digest = hashlib.sha1(f"{repo_id}@{revision}".encode())
        for path, data in sorted(self.files[repo_id][revision].items()):
            digest.update(path.encode() + b"\0" + hashlib.sha256(data).digest())
        return digest.hexdigest()

    def _revision(self, repo: str, revision: str) -> tuple[str, dict[str, bytes]] | None:
        for name, files in self.files.get(repo, {}).items():
            commit = self.commit_of(repo, name)
            if revision in (name, commit):
                return commit, files
        return None

    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                hub._handle(self, "GET")

            def do_HEAD(self) -> None:
                hub._handle(self, "HEAD")

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
        raw_path = urlsplit(handler.path).path
        path = unquote(raw_path)
        record = Request(method, path, {k.lower(): v for k, v in handler.headers.items()})
        self.requests.append(record)
        body = _read_body(handler)
        download = self._download(method, raw_path, urlsplit(handler.path).query)
        if download is not None:
            record.status = download.status
            handler.send_response(download.status)
            for name, value in download.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            if method != "HEAD":
                handler.wfile.write(download.body)
            return
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

    # ------------------------------------------------------------------------------------------------ downloads
    def _download(self, method: str, raw_path: str, query: str) -> Response | None:
        """The download routes (matched on the raw path: a revision may hold an encoded ``/``); None for others."""
        parts = [unquote(part) for part in raw_path.strip("/").split("/")]
        if method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), method)
        if method != "GET" or len(parts) < 4 or parts[:2] != ["api", "models"]:
            return None
        repo, rest = f"{parts[2]}/{parts[3]}", parts[4:]
        if rest[:1] == ["tree"] and len(rest) >= 2:
            return self._tree(repo, rest[1], "/".join(rest[2:]), parse_qs(query))
        if not rest or (rest[:1] == ["revision"] and len(rest) == 2):
            return self._info(repo, rest[1] if rest else "main")
        return None

    def _not_found(self, code: str, message: str, commit: str | None = None) -> Response:
        data = json.dumps({"error": message}).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(data)), "X-Error-Code": code,
                   "X-Error-Message": message}
        if commit:
            headers["X-Repo-Commit"] = commit
        return Response(404, headers, data)

    def _lookup(self, repo: str, revision: str) -> tuple[str, dict[str, bytes]] | Response:
        if repo not in self.files:
            return self._not_found("RepoNotFound", "Repository not found")
        found = self._revision(repo, revision)
        if found is None:
            return self._not_found("RevisionNotFound", f"Invalid rev id: {revision}")
        return found

    def _resolve(self, repo: str, revision: str, path: str, method: str) -> Response:
        found = self._lookup(repo, revision)
        if isinstance(found, Response):
            return found
        commit, files = found
        if path not in files:
            return self._not_found("EntryNotFound", f"{path} does not exist on {revision!r}", commit)
        data = files[path]
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data)),
                   "ETag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Repo-Commit": commit,
                   "Accept-Ranges": "none"}
        return Response(200, headers, data)

    def _tree(self, repo: str, revision: str, folder: str, query: dict[str, list[str]]) -> Response:
        found = self._lookup(repo, revision)
        if isinstance(found, Response):
            return found
        _, files = found
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
        entries, folders = [], set()
        for path, data in sorted(files.items()):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/", 1)[0])
                continue
            entries.append({"type": "file", "path": path, "size": len(data), "oid": hashlib.sha1(data).hexdigest(),
                            "lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}})
        entries += [{"type": "directory", "path": name, "oid": hashlib.sha1(name.encode()).hexdigest()}
                    for name in sorted(folders)]
        return _json(entries)

    def _info(self, repo: str, revision: str) -> Response:
        found = self._lookup(repo, revision)
        if isinstance(found, Response):
            return found
        commit, files = found
        return _json({"id": repo, "modelId": repo, "sha": commit, "private": False, "disabled": False,
                      "gated": False, "tags": [], "siblings": [{"rfilename": path} for path in sorted(files)]})

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


def _json(payload: Any) -> Response:
    data = json.dumps(payload).encode()
    return Response(200, {"Content-Type": "application/json", "Content-Length": str(len(data))}, data)


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
