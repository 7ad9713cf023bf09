"""What another web page may do with this server: nothing but link to it.

Browsers let any page embed ``<audio src=http://127.0.0.1:PORT/audio/N>`` (and so learn the
durations of indexed sounds), frame the search page, and fire no-cors GETs that run the model.
:class:`BrowserFenceMiddleware` closes those doors for every response:

- ``Cross-Origin-Resource-Policy: same-origin``: the browser refuses to hand a response to a
  page of another origin (an ``<audio>``, ``<img>`` or no-cors ``fetch`` embedding it fails);
- ``Content-Security-Policy: default-src 'self'; frame-ancestors 'none'; ...``: the page loads
  only its own scripts and styles and cannot be framed;
- ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``;

and it answers 403 to requests a browser marks as coming from another page
(``Sec-Fetch-Site`` ``cross-site`` or ``same-site``; another port of 127.0.0.1 is same-site)
for the routes that run the model or read indexed files. Requests without the header (curl,
scripts) and the user's own navigation (``none``) pass.
"""

from __future__ import annotations

import json

# connect-src adds blob: to 'self' so the page (and scripts reading its exports) can fetch the
# CSV/JSON/M3U exports it builds as blob: URLs; only the page's own scripts can make those.
CSP = ("default-src 'self'; connect-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; "
       "form-action 'self'; object-src 'none'")
HEADERS = [
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),  # frame-ancestors for browsers that predate it
]
GUARDED = ("/search", "/audio/")  # route prefixes that run the model or read indexed files
FOREIGN = ("cross-site", "same-site")  # Sec-Fetch-Site values of a request another page made


def foreign_request(path: str, headers: dict[str, str]) -> bool:
    """Whether a request to ``path`` was made by another page (per the browser's
    ``Sec-Fetch-Site``) for a route that another page must not use."""
    return headers.get("sec-fetch-site") in FOREIGN and any(
        path == p.rstrip("/") or path.startswith(p) for p in GUARDED)


class BrowserFenceMiddleware:
    """Pure ASGI: adds :data:`HEADERS` to every response, refuses :func:`foreign_request`s."""

    def __init__(self, app, csp_exempt: tuple[str, ...] = ()):
        self.app = app
        self.csp_exempt = csp_exempt  # pages that need a CDN and inline scripts (FastAPI's /docs, --docs only)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        exempt = scope.get("path", "") in self.csp_exempt

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                if exempt:
                    names.add(b"content-security-policy")
                message = {**message, "headers": [*message.get("headers", []),
                                                  *[(k, v) for k, v in HEADERS if k not in names]]}
            await send(message)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if foreign_request(scope.get("path", ""), headers):
            body = json.dumps({"detail": f"refused: {scope.get('path', '')} may only be used by this server's own "
                                         f"page (Sec-Fetch-Site: {headers.get('sec-fetch-site')})"}).encode()
            await send_with_headers({"type": "http.response.start", "status": 403,
                                     "headers": [(b"content-type", b"application/json"),
                                                 (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send_with_headers)
