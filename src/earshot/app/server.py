"""The HTTP API and search page over one index, built by :func:`create_app`.

Files are exposed by their index id only (``/audio/{id}``), never by path, and only while the
file on disk is still the one that was indexed (same real location inside the indexed folder,
same size and mtime), so a request can reach nothing but the sounds that were indexed.

The server is meant to face a browser on the same machine, so it distrusts what a browser can
be made to send: requests whose ``Host`` is not one of this server's names are refused (DNS
rebinding), as are uploads and other non-GET requests from another page's ``Origin``. Uploads
are bounded twice: by bytes while the body streams in (nothing past the limit is read), and by
the duration their header declares before anything is decoded. Model work never runs on the
event loop, so ``/health`` answers at once while searches are busy; concurrent text queries
share one encoder call (:class:`TextBatcher`). A re-index under a running server is noticed and
the index reopened (:class:`LiveIndex`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import queue
import re
import shutil
import sqlite3
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi import Path as FastApiPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from earshot.app.limits import BodyDeadlineMiddleware, DecodeSlots, ServeLimits
from earshot.app.security import BrowserFenceMiddleware
from earshot.audio.io import SUPPORTED_SUFFIXES
from earshot.errors import AudioError, EarshotError

STATIC = Path(__file__).resolve().parent / "static"
_MEDIA = {".wav": "audio/wav", ".wave": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg",
          ".oga": "audio/ogg", ".mp3": "audio/mpeg", ".aif": "audio/aiff", ".aiff": "audio/aiff"}
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
MULTIPART_SLACK = 64 * 1024  # form boundaries and headers around the uploaded bytes
_CANONICAL_ID = re.compile(r"-?(0|[1-9][0-9]{0,39})")  # an integer written as /search writes ids
ECHO_CHARS = 100  # at most this much of a rejected input is echoed in a 422 body


class MomentOut(BaseModel):
    start: float  # seconds
    end: float
    score: float  # best window score in the span
    peak_start: float  # where to start playing
    peak_end: float


class Result(BaseModel):
    rank: int
    score: float
    id: int
    name: str  # file name
    path: str  # relative to the indexed folder
    folder: str  # relative folder ("" at the top)
    duration: float  # seconds
    window_start: float  # seconds: where in the file the query matches best
    window_end: float
    window_score: float
    audio_url: str
    peaks: list[int]  # waveform envelope, 0..255 per equal slice of the file ([] if not stored)
    moments: list[MomentOut] = []  # spans where the query matches, best first
    words_score: float | None = None  # BM25 of the query's words (None: not found by words)
    fused: float | None = None  # hybrid: the reciprocal-rank-fusion score the rank follows
    also_at: list[str] = []  # other paths holding the same sound (same bytes or near duplicates)


class SearchResponse(BaseModel):
    query: str
    k: int
    results: list[Result]
    mode: str = "meaning"  # hybrid, meaning or words
    ranking: str = "windows"  # windows or pooled


class TextBatcher:
    """Embeds concurrent text queries together: one encoder call for all that are waiting.

    Requests queue up while the encoder is busy; the worker thread then takes everything
    queued (up to ``max_batch``) in one call. A lone query never waits for company, so latency
    at one client is unchanged, and throughput grows with the number of clients instead of
    falling behind one lock.
    """

    def __init__(self, embed_many: Callable[[list[str]], list[Any]], max_batch: int = 64):
        self._embed_many = embed_many
        self._max_batch = max_batch
        self._queue: queue.Queue = queue.Queue()
        self.calls = 0  # encoder calls made (for tests: fewer than queries under load)
        self._thread = threading.Thread(target=self._run, name="earshot-text-batcher", daemon=True)
        self._thread.start()

    def embed(self, text: str) -> Any:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((text, fut))
        return fut.result()

    def close(self) -> None:
        self._queue.put(None)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            try:
                vecs = self._embed_many([t for t, _ in batch])
                self.calls += 1
            except BaseException as e:  # noqa: BLE001 - handed to every waiting request
                for _, fut in batch:
                    fut.set_exception(e)
            else:
                for (_, fut), v in zip(batch, vecs):
                    fut.set_result(v)


class LiveIndex:
    """The index a running server answers from, reopened when a re-index changes it.

    A poller thread reads the index's status (:func:`earshot.index.status.read_status`, a
    read-only connection) once per ``interval_s``. When the generation moved, the index is
    reopened (keeping the loaded model) as soon as the indexer has written matching vectors or
    is no longer running (a killed run); until then searches still return k hits (the index
    ranks exactly from the database when its vectors lag) and ``/health`` says an update is
    under way. A replaced database (another uid or inode: deleted and rebuilt) is reopened
    likewise; while a rebuild has not swapped its new directory in, the old index keeps
    answering from the files it holds open. Requests also compare the database's inode
    (:meth:`current`, one ``stat``), so a swap is seen at once rather than at the next poll. The
    cached figures are what ``/health`` reports, so it never waits for a lock a search holds.
    """

    def __init__(self, path: Path, index, interval_s: float = 1.0):
        self.path = path
        self.index = index
        self.reopened = 0
        self.partial: str | None = index.partial()
        self.updating = False
        self.error: str | None = None
        self._reopen_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval_s,), name="earshot-index-poll",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()

    def current(self):
        """The index to answer this request from: reopened first if its database was replaced
        by a complete new one (the common case costs one ``stat``)."""
        from earshot.index.status import database_inode

        inode = database_inode(self.path)
        if inode is not None and inode != self.index.inode:
            with contextlib.suppress(sqlite3.OperationalError, EarshotError):
                self.poll()
        return self.index

    def _loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.poll()
                self.error = None
            except sqlite3.OperationalError:
                pass  # busy or briefly unreadable: look again next time
            except Exception as e:  # noqa: BLE001 - e.g. rebuilt with another model: say so in /health
                self.error = f"the index changed and cannot be reopened ({e}); restart the server"

    def poll(self) -> None:
        """Look once: reopen if the database moved on (or was replaced) and its vectors are ready."""
        from earshot.index import Index
        from earshot.index.status import read_status

        with self._reopen_lock:
            try:
                st = read_status(self.path)
            except EarshotError:  # deleted; a rebuild swaps a new one in: keep answering from the old
                self.updating = True
                return
            self.partial = st.partial
            ix = self.index
            if st.generation == ix.generation and st.uid == ix.uid and st.inode == ix.inode:
                self.updating = False
                return
            if not st.vectors_ready and st.indexer_running:
                self.updating = True
                return
            self.index = Index.open(self.path, ix.encoder)  # the old one closes when unused
            self.reopened += 1
            self.updating = False


def _host_name(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:8000
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class GuardMiddleware:
    """Host allow-list, same-origin rule for state-changing requests, streamed upload limit.

    Pure ASGI, so it sees the body as it streams: once ``max_body`` bytes have arrived (or the
    declared Content-Length exceeds it) the request is answered 413 and nothing more is read.
    """

    def __init__(self, app, allowed_hosts: Sequence[str], max_body: int):
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.allowed = {h.lower().strip("[]") for h in allowed_hosts}
        self.max_body = max_body

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if not self.any_host and _host_name(host) not in self.allowed:
            await _reply(send, 403, f"host {host[:80]!r} is not served here (allowed: "
                                    f"{', '.join(sorted(self.allowed))}; see `earshot serve --allow-host`)")
            return
        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            origin = headers.get("origin")
            own = f"{scope.get('scheme', 'http')}://{host}"
            if (origin is not None and origin != own) or headers.get("sec-fetch-site") == "cross-site":
                await _reply(send, 403, f"cross-site request refused: origin {str(origin)[:80]!r} is not {own!r}")
                return
            declared = headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_body:
                await _reply(send, 413, f"upload larger than {self.max_body - MULTIPART_SLACK} bytes")
                return
            receive = self._bounded(receive)
        await self.app(scope, receive, send)

    def _bounded(self, receive):
        seen = 0

        async def bounded_receive():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_body:  # FastAPI re-raises HTTPExceptions met while reading the body
                    raise HTTPException(413, f"upload larger than {self.max_body - MULTIPART_SLACK} bytes")
            return msg

        return bounded_receive


async def _reply(send, status: int, detail: str) -> None:
    import json

    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _short(value: Any) -> Any:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + f"… ({len(text)} characters)"


def create_app(
    index_path: str | Path,
    model: Any = None,
    max_query_chars: int = 500,
    max_k: int = 100,
    max_upload_bytes: int = 20 * 1024 * 1024,
    max_upload_s: float = 600.0,
    allowed_hosts: Sequence[str] | None = None,
    preload: bool = True,
    poll_s: float = 1.0,
    watch: bool | Any = False,
    docs: bool = False,
    serve_limits: ServeLimits = ServeLimits(),
) -> FastAPI:
    """A FastAPI app serving index ``index_path``: the page at ``/`` and the JSON API.

    ``model`` (path or encoder) defaults to the model that built the index; with ``preload`` it
    is loaded here, so the server is ready when it says so. The limits bound query length,
    result count, upload bytes and upload duration; beyond them requests get a 4xx with a
    message. ``allowed_hosts`` are the Host names served (default: the localhost names; "*"
    accepts any, for use behind a proxy that checks). ``poll_s`` is how often a re-index is
    looked for. ``watch`` (True, or an :class:`earshot.index.watch.WatchConfig`) keeps the index
    up to date with its folder in a background thread, using the loaded model.
    looked for. ``docs`` serves the interactive API docs (``/docs``, ``/redoc``, the OpenAPI
    schema); off by default, so another page cannot use them to learn the API.
    ``serve_limits`` bounds slow uploads (408) and concurrent decoding (503 + Retry-After); its
    connection bounds apply where uvicorn runs (:func:`earshot.app.limits.uvicorn_options`).
    """
    from earshot.index import Index
    from earshot.index.decode import Limits
    from earshot.index.store import DamagedIndex

    index_path = Path(index_path)
    live = LiveIndex(index_path, Index.open(index_path, model), poll_s)
    if preload:
        live.index.encoder  # noqa: B018 - load the model now, not on the first query
    batcher = TextBatcher(lambda texts: live.index.embed_queries(texts))
    limits = Limits(max_duration_s=max_upload_s)
    hosts = tuple(allowed_hosts) if allowed_hosts is not None else LOCAL_NAMES

    watcher = None
    if watch:
        from earshot.index.watch import WatchConfig, Watcher

        watcher = Watcher(live.index.settings.root, live.index.encoder, index_path,
                          watch if isinstance(watch, WatchConfig) else WatchConfig())

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        live.close()
        batcher.close()
        if watcher is not None:
            watcher.close()

    app = FastAPI(title="earshot", description="Search your sounds by text or by example.", lifespan=lifespan,
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
                  openapi_url="/openapi.json" if docs else None)
    app.add_middleware(BodyDeadlineMiddleware, idle_s=serve_limits.body_idle_s, total_s=serve_limits.body_total_s)
    app.add_middleware(GuardMiddleware, allowed_hosts=hosts, max_body=max_upload_bytes + MULTIPART_SLACK)
    app.add_middleware(BrowserFenceMiddleware, csp_exempt=("/docs", "/redoc") if docs else ())  # outermost: its headers go on every answer, 403s included
    app.state.live = live
    slots = app.state.decode_slots = DecodeSlots(serve_limits.max_decoding)
    app.state.batcher = batcher
    app.state.watcher = watcher

    def results(hits, ix) -> list[Result]:
        from earshot.index.duplicates import also_at

        env = ix.peaks([h.id for h in hits])
        copies = also_at(ix, [h.id for h in hits])
        return [Result(rank=h.rank, score=h.score, id=h.id, name=Path(h.path).name, path=h.path,
                       folder=Path(h.path).parent.as_posix().lstrip("."), duration=h.duration,
                       window_start=h.window_start, window_end=h.window_end, window_score=h.window_score,
                       audio_url=f"/audio/{h.id}", peaks=env.get(h.id, []),
                       moments=[MomentOut(**vars(m)) for m in h.moments], words_score=h.words_score,
                       fused=h.fused, also_at=copies.get(h.id, [])) for h in hits]

    def options(ranking: str, top_m: int, where: str | None, folder: str | None) -> dict[str, Any]:
        from earshot.index.filters import Filter

        return {"ranking": ranking, "top_m": top_m, "filter": Filter(where=where or None, folder=folder or None)}

    @app.exception_handler(EarshotError)
    async def _earshot_error(_request, exc: EarshotError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    @app.exception_handler(DamagedIndex)
    async def _damaged(_request, exc: DamagedIndex) -> JSONResponse:  # the server's files, not the request
        return JSONResponse(status_code=500, content={"detail": str(exc)})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, exc: RequestValidationError) -> JSONResponse:
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", ""),
                   "input": _short(e.get("input"))} for e in exc.errors()[:10]]
        return JSONResponse(status_code=422, content={"detail": detail})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        ix = live.index
        s = ix.settings
        return {"status": "partial" if live.partial else ("empty" if len(ix) == 0 else "ok"),
                "partial": live.partial, "updating": live.updating, "generation": ix.generation,
                "index_uid": ix.uid,
                "restart_needed": live.error,
                "watching": None if watcher is None else {"updates": len(watcher.updates), "error": watcher.error},
                "items": len(ix), "index_type": ix.kind, "model_id": s.model_id,
                "window_s": s.window_s, "hop_s": s.hop_s, "pooling": s.pooling,
                "limits": {"max_query_chars": max_query_chars, "max_k": max_k,
                           "max_upload_bytes": max_upload_bytes, "max_upload_s": max_upload_s}}

    @app.get("/search", response_model=SearchResponse)
    def search(
        q: str = Query(..., min_length=1, max_length=max_query_chars, description="What the sound is like."),
        k: int = Query(10, ge=1, le=max_k, description="Number of results."),
        mode: str = Query("hybrid", pattern="^(hybrid|meaning|words)$",
                          description="hybrid (words and meaning fused), meaning (the model) or words (names, tags)."),
        ranking: str = Query("windows", pattern="^(windows|pooled)$",
                             description="windows: a file scores its best window(s); pooled: its mean vector."),
        top_m: int = Query(1, ge=1, le=100, description="With windows: mean of a file's top m windows."),
        where: str | None = Query(None, max_length=max_query_chars, description='Filters, e.g. "duration<2 and channels=2".'),
        folder: str | None = Query(None, max_length=max_query_chars, description="Only files under this folder."),
    ) -> SearchResponse:
        from earshot.index import ranking as R
        from earshot.index.words import parse_query

        if not q.strip():
            raise HTTPException(422, "query is blank: type some words describing the sound")
        opts = R.SearchOptions(k=k, mode=mode, **options(ranking, top_m, where, folder))  # type: ignore[arg-type]
        vec = None
        if mode != "words":
            embedded = parse_query(q).text
            if not embedded:
                raise HTTPException(422, f"query {q!r} only excludes words; say what to look for too")
            vec = batcher.embed(embedded)
        ix = live.current()
        hits = R.search(ix, q, vec, opts)
        return SearchResponse(query=q, k=k, results=results(hits, ix), mode=mode, ranking=ranking)

    @app.get("/search/like", response_model=SearchResponse)
    def search_like(
        id: int = Query(..., ge=0, description="An indexed file's id (from a result)."),
        start: float | None = Query(None, ge=0, description="Seconds: query by the window there (default: whole file)."),
        k: int = Query(10, ge=1, le=max_k),
        ranking: str = Query("windows", pattern="^(windows|pooled)$"),
        top_m: int = Query(1, ge=1, le=100),
        where: str | None = Query(None, max_length=max_query_chars),
        folder: str | None = Query(None, max_length=max_query_chars),
    ) -> SearchResponse:
        ix = live.current()
        found = ix.file(id)
        if found is None:
            raise HTTPException(404, f"no file with id {id} in this index")
        hits = ix.search_like(id, start, k, **options(ranking, top_m, where, folder))
        label = f"like {found[0].path}" + (f" @ {start:.1f} s" if start is not None else "")
        return SearchResponse(query=label, k=k, results=results(hits, ix), mode="meaning", ranking=ranking)

    @app.post("/search/audio", response_model=SearchResponse)
    def search_audio(
        file: UploadFile = File(..., description="An example clip (wav, flac, ogg, mp3, aiff)."),
        k: int = Query(10, ge=1, le=max_k),
        ranking: str = Query("windows", pattern="^(windows|pooled)$"),
        top_m: int = Query(1, ge=1, le=100),
        where: str | None = Query(None, max_length=max_query_chars),
        folder: str | None = Query(None, max_length=max_query_chars),
    ) -> SearchResponse:
        opts = options(ranking, top_m, where, folder)
        from earshot.index.filters import compile_filter

        compile_filter(opts["filter"])  # a bad --where is a 400 before the upload is decoded
        name = Path(file.filename or "upload").name[:100] or "upload"
        suffix = Path(name).suffix.lower()
        if suffix not in SUPPORTED_SUFFIXES:
            raise HTTPException(415, f"unsupported audio type {suffix or '(none)'!r}; "
                                     f"use one of {', '.join(SUPPORTED_SUFFIXES)}")
        if file.size is not None and file.size > max_upload_bytes:
            raise HTTPException(413, f"upload larger than {max_upload_bytes} bytes")
        if file.size == 0:
            raise HTTPException(422, f"{name}: empty file")
        if not slots.try_enter():
            raise HTTPException(503, f"busy: {slots.n} uploads are being decoded; try again in a moment",
                                headers={"Retry-After": "2"})
        fd, tmp = tempfile.mkstemp(suffix=suffix, prefix="earshot-query-")
        try:
            with os.fdopen(fd, "wb") as f:
                file.file.seek(0)
                shutil.copyfileobj(file.file, f, 1 << 20)
            try:
                ix = live.current()
                hits = ix.search_audio(tmp, k, limits=limits, **opts)
            except AudioError as e:
                raise HTTPException(422, f"{name}: {e.reason.replace(tmp, name)}") from None
        finally:
            os.unlink(tmp)
            slots.leave()
        return SearchResponse(query=name, k=k, results=results(hits, ix))

    @app.get("/audio/{file_id}")
    def audio(file_id: str = FastApiPath(..., description="A file id as /search returned it (plain decimal).")
              ) -> FileResponse:
        from earshot.index.status import NotPlayable, playable

        if not _CANONICAL_ID.fullmatch(file_id):  # int() would take "010", "+10", "10_0", " 10"
            raise HTTPException(422, f"{_short(file_id)!r} is not a file id: ids are plain decimal numbers "
                                     "as /search returns them")
        file_id = int(file_id)  # type: ignore[assignment]
        ix = live.current()
        found = ix.file(file_id)
        try:
            real, st = playable(found[0] if found else None, ix.settings.root, file_id, ix.links_outside)
        except NotPlayable as e:
            raise HTTPException(410 if e.gone else 404, str(e)) from None
        name = Path(found[0].path).name  # type: ignore[index] - playable refused a missing row
        return FileResponse(real, stat_result=st, filename=name, content_disposition_type="inline",
                            media_type=_MEDIA.get(Path(name).suffix.lower(), "application/octet-stream"))

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:  # what browsers ask for before reading the page's <link>
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
