"""Bounds on what slow or greedy clients can hold: connections, time, decoding slots.

- A request head must arrive within ``head_timeout_s`` of its first byte (or of the connection
  opening): :class:`DeadlineH11Protocol` closes slowloris connections that trickle headers.
- Idle keep-alive connections close after ``keep_alive_s`` (uvicorn's ``timeout_keep_alive``).
- A request body must keep arriving: :class:`BodyDeadlineMiddleware` answers 408 when no body
  bytes came for ``body_idle_s`` or the whole body took longer than ``body_total_s``.
- At most ``max_connections`` connections are served at once (uvicorn's
  ``limit_concurrency``: 503 beyond it).
- Request heads up to :data:`MAX_HEAD_BYTES` are parsed, so an over-long query gets a 422 that
  says so instead of a reset connection.
- :class:`DecodeSlots` caps uploads being decoded at once; a full server answers 503 with
  ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_HEAD_BYTES = 2 * 1024 * 1024  # a request line + headers larger than this is refused (400)


@dataclass(frozen=True)
class ServeLimits:
    """Time and connection bounds of `earshot serve` (see the module docstring)."""

    head_timeout_s: float = 10.0  # a request head must be complete this long after it starts
    keep_alive_s: float = 5.0  # idle keep-alive connections close after this
    body_idle_s: float = 10.0  # 408 when an upload sends nothing for this long
    body_total_s: float = 120.0  # 408 when an upload's body takes longer than this in all
    max_connections: int = 64  # connections served at once; more get 503
    max_decoding: int = 2  # uploads decoded and embedded at once; more get 503 + Retry-After


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head.

    uvicorn only times out idle keep-alive connections; a client that sends a head one byte at
    a time holds its connection for ever. Here a timer starts when a connection opens (and
    again when a keep-alive connection starts its next head) and closes the connection if no
    complete head has arrived when it fires.
    """

    head_timeout_s = ServeLimits.head_timeout_s

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm()

    def _waiting_for_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self._waiting_for_head() and not self.transport.is_closing():
            self.logger.info("closing a connection whose request head took more than %.0f s", self.head_timeout_s)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._waiting_for_head():
            self._arm()
        before = self.cycle
        super().data_received(data)
        if self.cycle is not before and self.cycle is not None:  # a complete head: a new request
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def protocol_class(head_timeout_s: float) -> type[DeadlineH11Protocol]:
    """:class:`DeadlineH11Protocol` with this head deadline (uvicorn takes a class)."""
    return type("DeadlineH11Protocol", (DeadlineH11Protocol,), {"head_timeout_s": float(head_timeout_s)})


def uvicorn_options(limits: ServeLimits = ServeLimits()) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` that apply ``limits``."""
    return {"http": protocol_class(limits.head_timeout_s), "timeout_keep_alive": limits.keep_alive_s,
            "limit_concurrency": limits.max_connections, "h11_max_incomplete_event_size": MAX_HEAD_BYTES}


class BodyDeadlineMiddleware:
    """Pure ASGI: a request body that stalls for ``idle_s`` or takes ``total_s`` in all is
    answered 408 (raised as an HTTPException from ``receive``, which FastAPI turns into the
    response while it reads the body)."""

    def __init__(self, app, idle_s: float, total_s: float):
        self.app, self.idle_s, self.total_s = app, idle_s, total_s

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        end = loop.time() + self.total_s
        finished = False  # the whole body is in: later receives wait for a disconnect, untimed

        async def timed_receive():
            nonlocal finished
            if finished:
                return await receive()
            left = min(self.idle_s, end - loop.time())
            try:
                msg = await asyncio.wait_for(receive(), timeout=max(left, 0.001))
                finished = msg["type"] != "http.request" or not msg.get("more_body", False)
                return msg
            except asyncio.TimeoutError:
                from fastapi import HTTPException

                raise HTTPException(408, f"the request body arrived too slowly (nothing for {self.idle_s:.0f} s, "
                                         f"or more than {self.total_s:.0f} s in all)") from None

        await self.app(scope, receive=timed_receive, send=send)


class DecodeSlots:
    """At most ``n`` uploads decoded at once; :meth:`try_enter` says whether one may start."""

    def __init__(self, n: int):
        self.n = n
        self._sem = threading.BoundedSemaphore(n)
        self.refused = 0  # uploads turned away because every slot was busy (for /health and tests)

    def try_enter(self) -> bool:
        ok = self._sem.acquire(blocking=False)
        if not ok:
            self.refused += 1
        return ok

    def leave(self) -> None:
        self._sem.release()
