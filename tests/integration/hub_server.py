"""A small Hugging Face Hub for tests: a real aiohttp server on a free 127.0.0.1 port, in a thread.

It speaks the endpoints ``huggingface_hub`` uses to list and download a model repository:

- ``GET /api/models/{org}/{repo}`` and ``.../revision/{rev}``: ``id``, ``sha``, ``lastModified``, ``siblings``;
  with ``?blobs=true`` (``files_metadata=True``) each sibling also has ``size``, ``blobId`` and, for LFS files (all
  ``.gguf``), ``lfs: {sha256, size, pointerSize}``.
- ``HEAD``/``GET /{org}/{repo}/resolve/{rev}/{path}``: for an LFS file a 302 to ``/cdn/{sha256}`` (an absolute URL,
  as the Hub redirects to its CDN) carrying ``X-Repo-Commit``, ``X-Linked-Etag``, ``X-Linked-Size``, ``ETag``; for a
  plain file the bytes with ``X-Repo-Commit``, ``ETag`` and ``Content-Length``.
- ``GET``/``HEAD /cdn/{sha256}``: the bytes, with ``Range`` (206 + ``Content-Range``), like a signed CDN URL (no auth).

A repository with a ``token`` answers 401 without ``Authorization: Bearer <token>`` (as the Hub does for private and
gated repositories); an unknown repository or revision answers 404 with ``X-Error-Code``. ``wrong_sha`` makes the
listing report a wrong sha256 for one file (to test verification). ``rate_bytes_per_s`` (off unless set; a test
may change it at any time) throttles every body send, each request on its own, to test interrupted and concurrent
downloads. Every request is logged for assertions.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class HubRepo:
    files: Mapping[str, Path | bytes]
    token: str | None = None
    wrong_sha: frozenset[str] = frozenset()
    listed_sha: Mapping[str, str] = field(default_factory=dict)
    """Files whose listing shows this text as their sha256 verbatim (hostile endpoints)."""
    sha: str = COMMIT
    last_modified: str = "2024-11-20T10:00:00.000Z"


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    authorization: bool
    sent: int = 0
    redirect: bool = False


@dataclass
class _Blob:
    source: Path | bytes
    size: int
    sha256: str

    def read(self, start: int, length: int) -> bytes:
        if isinstance(self.source, bytes):
            return self.source[start : start + length]
        with self.source.open("rb") as f:
            f.seek(start)
            return f.read(length)


def _sha256(source: Path | bytes) -> str:
    h = hashlib.sha256()
    if isinstance(source, bytes):
        h.update(source)
    else:
        with source.open("rb") as f:
            while block := f.read(8 << 20):
                h.update(block)
    return h.hexdigest()


def _is_lfs(path: str) -> bool:
    return path.endswith(".gguf")


@dataclass
class HubServer:
    repos: dict[str, HubRepo]
    url: str = ""
    cdn_url: str = ""
    """The same server on 127.0.0.2: another host, as the Hub's CDN is (huggingface_hub follows same-host redirects
    itself and expects the redirect's headers only from a cross-host one)."""
    requests: list[Request] = field(default_factory=list)
    rate_bytes_per_s: float | None = None
    """When set, each response body is sent at about this rate (read per chunk: a test may slow down or speed up the
    server while a download runs)."""
    _blobs: dict[str, _Blob] = field(default_factory=dict)
    _by_path: dict[tuple[str, str], _Blob] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for repo_id, repo in self.repos.items():
            for path, source in repo.files.items():
                size = len(source) if isinstance(source, bytes) else source.stat().st_size
                blob = _Blob(source, size, _sha256(source))
                self._blobs[blob.sha256] = blob
                self._by_path[(repo_id, path)] = blob

    # --- what tests look at ---------------------------------------------------------------------------------

    def downloads(self) -> list[Request]:
        """GETs of file content (CDN or resolve bodies; a resolve GET answered with the CDN redirect sends none)."""
        return [
            r
            for r in self.requests
            if r.method == "GET" and not r.redirect and (r.path.startswith("/cdn/") or "/resolve/" in r.path)
        ]

    def full_downloads(self) -> list[Request]:
        """Whole-file GETs (no Range): what a header read must never do."""
        return [r for r in self.downloads() if r.range is None]

    def bytes_sent(self) -> int:
        return sum(r.sent for r in self.requests)

    def bytes_sent_for(self, repo_id: str, path: str) -> int:
        """Body bytes sent of one file, through the CDN (LFS files) or the resolve URL, by every request so far."""
        cdn = f"/cdn/{self.sha256(repo_id, path)}"
        resolve = f"/{repo_id}/resolve/"
        return sum(
            r.sent
            for r in list(self.requests)
            if r.path == cdn or (r.path.startswith(resolve) and r.path.endswith(f"/{path}"))
        )

    def header_checks_for(self, repo_id: str, path: str, first_window: int = 256 << 10) -> int:
        """How many fit checks read the file's header: each starts with a Range of exactly the first window."""
        cdn = f"/cdn/{self.sha256(repo_id, path)}"
        resolve = f"/{repo_id}/resolve/"
        wanted = f"bytes=0-{first_window - 1}"
        return sum(
            1
            for r in list(self.requests)
            if (r.path == cdn or (r.path.startswith(resolve) and r.path.endswith(f"/{path}")))
            and r.range == wanted
            and not r.redirect  # a resolve GET answered with the CDN redirect: the same read, counted at the CDN
        )

    def sha256(self, repo_id: str, path: str) -> str:
        return self._by_path[(repo_id, path)].sha256

    # --- handlers -------------------------------------------------------------------------------------------

    def _log(self, request: web.Request) -> Request:
        entry = Request(request.method, request.path, request.headers.get("Range"), "Authorization" in request.headers)
        self.requests.append(entry)
        return entry

    def _repo(self, request: web.Request, repo_id: str) -> HubRepo:
        repo = self.repos.get(repo_id)
        if repo is None:
            raise web.HTTPNotFound(
                headers={"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"},
                text='{"error":"Repository not found"}',
                content_type="application/json",
            )
        if repo.token is not None and request.headers.get("Authorization") != f"Bearer {repo.token}":
            raise web.HTTPUnauthorized(
                headers={"X-Error-Message": "Invalid username or password."},
                text='{"error":"Invalid username or password."}',
                content_type="application/json",
            )
        return repo

    async def model_info(self, request: web.Request) -> web.Response:
        self._log(request)
        repo_id = f"{request.match_info['org']}/{request.match_info['repo']}"
        repo = self._repo(request, repo_id)
        rev = request.match_info.get("rev")
        if rev not in (None, "main", repo.sha):
            raise web.HTTPNotFound(headers={"X-Error-Code": "RevisionNotFound"}, text="revision not found")
        blobs = request.query.get("blobs", "").lower() in ("1", "true")
        siblings = []
        for path in sorted(repo.files):
            entry: dict[str, object] = {"rfilename": path}
            if blobs:
                blob = self._by_path[(repo_id, path)]
                entry["size"] = blob.size
                entry["blobId"] = hashlib.sha1(blob.sha256.encode()).hexdigest()
                if _is_lfs(path):
                    sha = (
                        blob.sha256
                        if path not in repo.wrong_sha
                        else hashlib.sha256(b"wrong" + path.encode()).hexdigest()
                    )
                    sha = repo.listed_sha.get(path, sha)
                    entry["lfs"] = {"sha256": sha, "size": blob.size, "pointerSize": 134}
            siblings.append(entry)
        doc = {
            "_id": "x" * 24,
            "id": repo_id,
            "modelId": repo_id,
            "sha": repo.sha,
            "lastModified": repo.last_modified,
            "private": repo.token is not None,
            "gated": False,
            "disabled": False,
            "tags": ["gguf"],
            "siblings": siblings,
        }
        return web.json_response(doc)

    async def resolve(self, request: web.Request) -> web.StreamResponse:
        entry = self._log(request)
        repo_id = f"{request.match_info['org']}/{request.match_info['repo']}"
        repo = self._repo(request, repo_id)
        rev, path = request.match_info["rev"], request.match_info["path"]
        if rev not in ("main", repo.sha):
            raise web.HTTPNotFound(headers={"X-Error-Code": "RevisionNotFound"}, text="revision not found")
        blob = self._by_path.get((repo_id, path))
        if blob is None:
            raise web.HTTPNotFound(
                headers={"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.sha}, text="entry not found"
            )
        headers = {"X-Repo-Commit": repo.sha, "Accept-Ranges": "bytes"}
        if _is_lfs(path):
            headers |= {
                "X-Linked-Etag": f'"{blob.sha256}"',
                "X-Linked-Size": str(blob.size),
                "ETag": f'W/"{hashlib.sha1(blob.sha256.encode()).hexdigest()}"',
                "Location": f"{self.cdn_url}/cdn/{blob.sha256}",
            }
            entry.redirect = True
            return web.Response(status=302, headers=headers)
        headers["ETag"] = f'"{hashlib.sha1(blob.sha256.encode()).hexdigest()}"'
        return await self._send(request, entry, blob, headers)

    async def cdn(self, request: web.Request) -> web.StreamResponse:
        entry = self._log(request)
        blob = self._blobs.get(request.match_info["sha"])
        if blob is None:
            raise web.HTTPNotFound(text="no such object")
        return await self._send(request, entry, blob, {"ETag": f'"{blob.sha256}"', "Accept-Ranges": "bytes"})

    async def _send(
        self, request: web.Request, entry: Request, blob: _Blob, headers: dict[str, str]
    ) -> web.StreamResponse:
        start, end = 0, blob.size - 1
        status = 200
        if (spec := request.headers.get("Range")) is not None:
            first, _, last = spec.removeprefix("bytes=").partition("-")
            start = int(first) if first else max(blob.size - int(last), 0)
            end = min(int(last), blob.size - 1) if first and last else blob.size - 1
            if start >= blob.size:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{blob.size}"})
            status = 206
            headers = headers | {"Content-Range": f"bytes {start}-{end}/{blob.size}"}
        length = end - start + 1
        response = web.StreamResponse(status=status, headers=headers | {"Content-Length": str(length)})
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        offset = start
        try:
            while offset <= end:
                rate = self.rate_bytes_per_s
                chunk = blob.read(offset, min(64 << 10 if rate else 1 << 20, end - offset + 1))
                await response.write(chunk)
                offset += len(chunk)
                entry.sent += len(chunk)
                if rate:
                    await asyncio.sleep(len(chunk) / rate)
        except ConnectionError:  # the client stopped reading (a header read that has what it needs)
            return response
        await response.write_eof()
        return response

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/models/{org}/{repo}", self.model_info)
        app.router.add_get("/api/models/{org}/{repo}/revision/{rev}", self.model_info)
        app.router.add_route("HEAD", "/{org}/{repo}/resolve/{rev}/{path:.+}", self.resolve)
        app.router.add_get("/{org}/{repo}/resolve/{rev}/{path:.+}", self.resolve, allow_head=False)
        app.router.add_route("HEAD", "/cdn/{sha}", self.cdn)
        app.router.add_get("/cdn/{sha}", self.cdn, allow_head=False)
        return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def hub_server(repos: Mapping[str, HubRepo]) -> Iterator[HubServer]:
    """Run a HubServer for ``repos`` (``org/repo`` -> files) until the block ends."""
    server = HubServer(dict(repos))
    port = _free_port()
    server.url = f"http://127.0.0.1:{port}"
    server.cdn_url = f"http://127.0.0.2:{port}"
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(server.app(), access_log=None)
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.2", port).start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name="hub-server", daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the test Hub did not start")
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
