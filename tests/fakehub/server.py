"""The fake Hub: a FastAPI app over in-memory repos, served by uvicorn in a thread."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import uvicorn
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from localcluster import free_port

TOKEN = "hf_fakehubtoken0123456789abcdefghijk"
USER = "codex-tester"
REPO_TYPES = {"models": "model", "datasets": "dataset"}


@dataclass
class Repo:
    repo_id: str
    repo_type: str = "model"
    private: bool = True
    # branch -> list of (commit sha, {path: bytes}) snapshots, oldest first
    branches: dict[str, list[tuple[str, dict[str, bytes]]]] = field(default_factory=lambda: {"main": []})

    def head(self, revision: str) -> tuple[str, dict[str, bytes]]:
        for snapshots in self.branches.values():
            for sha, files in snapshots:
                if sha == revision:
                    return sha, files
        snapshots = self.branches.get(revision)
        if snapshots is None:
            raise HTTPException(404, detail="Revision Not Found", headers={"X-Error-Code": "RevisionNotFound"})
        return snapshots[-1] if snapshots else ("0" * 40, {})


@dataclass
class FakeHub:
    url: str = ""
    token: str = TOKEN
    repos: dict[tuple[str, str], Repo] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)
    failures: list[list[Any]] = field(default_factory=list)

    def fail(self, path_fragment: str, status: int = 503, times: int = 1) -> None:
        """Answer the next ``times`` requests whose path contains ``path_fragment`` with ``status``."""
        self.failures.append([path_fragment, status, times])

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        return self.repo(repo_id, repo_type).head(revision)[1]


def seed_repo(hub: FakeHub, repo_id: str, files: dict[str, bytes], repo_type: str = "model",
              private: bool = False) -> str:
    """Put a repo with one commit holding ``files`` on the fake Hub; return the commit SHA."""
    repo = hub.repos.setdefault((repo_type, repo_id), Repo(repo_id, repo_type, private))
    return _commit(repo, "main", files, "seed")


def seed_dir(hub: FakeHub, repo_id: str, directory: Path, repo_type: str = "model") -> str:
    files = {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()}
    return seed_repo(hub, repo_id, files, repo_type)


def _commit(repo: Repo, branch: str, files: dict[str, bytes], summary: str) -> str:
    snapshots = repo.branches.setdefault(branch, [])
    parent = snapshots[-1] if snapshots else None
    merged = {**(parent[1] if parent else {}), **files}
    sha = hashlib.sha1(f"{repo.repo_id}{branch}{len(snapshots)}{summary}{time.time_ns()}".encode()).hexdigest()
    snapshots.append((sha, merged))
    return sha


def _oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def build_app(hub: FakeHub) -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def record_and_fail(request: Request, call_next):
        hub.requests.append((request.method, request.url.path))
        hub.authorizations.append(request.headers.get("authorization", ""))
        for failure in hub.failures:
            fragment, status, times = failure
            if times > 0 and fragment in request.url.path:
                failure[2] -= 1
                return JSONResponse({"error": f"injected {status}"}, status_code=status)
        return await call_next(request)

    def authorized(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {hub.token}"

    def require_auth(request: Request) -> None:
        if not authorized(request):
            raise HTTPException(401, detail="Invalid credentials in Authorization header")

    def get_repo(kind: str, namespace: str, name: str, request: Request) -> Repo:
        repo = hub.repos.get((REPO_TYPES.get(kind, kind), f"{namespace}/{name}"))
        if repo is None or (repo.private and not authorized(request)):
            raise HTTPException(404, detail="Repository Not Found", headers={"X-Error-Code": "RepoNotFound"})
        return repo

    @app.get("/api/whoami-v2")
    def whoami(request: Request):
        require_auth(request)
        return {"type": "user", "name": USER, "auth": {"accessToken": {"role": "write"}}, "orgs": []}

    @app.post("/api/repos/create")
    async def create_repo(request: Request):
        require_auth(request)
        body = await request.json()
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or USER}/{body['name']}"
        if (repo_type, repo_id) in hub.repos:
            return JSONResponse({"error": "You already created this repo", "url": f"{hub.url}/{repo_id}"},
                                status_code=409)
        # huggingface_hub 1.x sends "private", 2.x "visibility".
        private = bool(body.get("private")) or body.get("visibility") in ("private", "protected")
        hub.repos[(repo_type, repo_id)] = Repo(repo_id, repo_type, private)
        return {"url": f"{hub.url}/{repo_id}", "name": repo_id, "id": repo_id}

    @app.post("/api/validate-yaml")
    async def validate_yaml():
        return {}

    @app.post("/api/{kind}/{namespace}/{name}/branch/{branch}")
    def create_branch(kind: str, namespace: str, name: str, branch: str, request: Request):
        require_auth(request)
        repo = get_repo(kind, namespace, name, request)
        if branch in repo.branches:
            return JSONResponse({"error": "Reference already exists"}, status_code=409)
        repo.branches[branch] = list(repo.branches["main"][-1:])
        return {}

    @app.post("/api/{kind}/{namespace}/{name}/preupload/{revision}")
    async def preupload(kind: str, namespace: str, name: str, revision: str, request: Request):
        require_auth(request)
        get_repo(kind, namespace, name, request)
        body = await request.json()
        return {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                          for f in body.get("files", [])]}

    @app.post("/api/{kind}/{namespace}/{name}/commit/{revision}")
    async def commit(kind: str, namespace: str, name: str, revision: str, request: Request):
        require_auth(request)
        repo = get_repo(kind, namespace, name, request)
        if revision not in repo.branches:
            raise HTTPException(404, detail="Revision Not Found", headers={"X-Error-Code": "RevisionNotFound"})
        files, summary = {}, ""
        for line in (await request.body()).splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            if item["key"] == "header":
                summary = item["value"].get("summary", "")
            elif item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            else:
                raise HTTPException(400, detail=f"fake hub: unsupported operation {item['key']}")
        sha = _commit(repo, revision, files, summary)
        return {"success": True, "commitOid": sha, "commitUrl": f"{hub.url}/{repo.repo_id}/commit/{sha}"}

    def info(kind: str, namespace: str, name: str, revision: str, request: Request):
        repo = get_repo(kind, namespace, name, request)
        sha, files = repo.head(revision)
        return {"id": repo.repo_id, "modelId": repo.repo_id, "sha": sha, "private": repo.private,
                "siblings": [{"rfilename": path, "size": len(data)} for path, data in sorted(files.items())],
                "tags": [], "downloads": 0, "likes": 0}

    @app.get("/api/{kind}/{namespace}/{name}")
    def repo_info(kind: str, namespace: str, name: str, request: Request):
        return info(kind, namespace, name, "main", request)

    @app.get("/api/{kind}/{namespace}/{name}/revision/{revision:path}")
    def repo_info_at(kind: str, namespace: str, name: str, revision: str, request: Request):
        return info(kind, namespace, name, revision, request)

    @app.get("/api/{kind}/{namespace}/{name}/tree/{revision}")
    @app.get("/api/{kind}/{namespace}/{name}/tree/{revision}/{path:path}")
    def tree(kind: str, namespace: str, name: str, revision: str, request: Request, path: str = ""):
        _, files = get_repo(kind, namespace, name, request).head(revision)
        prefix = path.rstrip("/") + "/" if path else ""
        return [{"type": "file", "path": p, "size": len(d), "oid": _oid(d)}
                for p, d in sorted(files.items()) if p.startswith(prefix)]

    def resolve(repo: Repo, revision: str, path: str, method: str) -> Response:
        sha, files = repo.head(revision)
        if path not in files:
            raise HTTPException(404, detail="Entry not found", headers={"X-Error-Code": "EntryNotFound"})
        data = files[path]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{_oid(data)}"', "Content-Length": str(len(data))}
        return Response(content=b"" if method == "HEAD" else data, headers=headers,
                        media_type="application/octet-stream")

    @app.api_route("/{namespace}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
    def resolve_model(namespace: str, name: str, revision: str, path: str, request: Request):
        return resolve(get_repo("models", namespace, name, request), revision, path, request.method)

    @app.api_route("/datasets/{namespace}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
    def resolve_dataset(namespace: str, name: str, revision: str, path: str, request: Request):
        return resolve(get_repo("datasets", namespace, name, request), revision, path, request.method)

    return app


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # runs in a thread
        pass


def serve(hub: Optional[FakeHub] = None) -> Iterator[FakeHub]:
    hub = hub or FakeHub()
    port = free_port()
    hub.url = f"http://127.0.0.1:{port}"
    server = _Server(uvicorn.Config(build_app(hub), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("fake hub did not start")
        time.sleep(0.02)
    try:
        yield hub
    finally:
        server.should_exit = True
        thread.join(timeout=5)


@pytest.fixture
def fake_hub(monkeypatch, tmp_path) -> Iterator[FakeHub]:
    """A fresh fake Hub; huggingface_hub is pointed at it and given an empty cache."""
    from huggingface_hub import constants

    for hub in serve():
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        yield hub
