"""The live demo page at `GET /`: a quotes board and a candlestick chart, live
from the plain `/live-price` WebSocket and seeded from the `/api` routes.

Everything it needs ships in `stockstream/static/` (no CDN; the chart library
is vendored in `static/vendor/` with its licence), so the page works on a
machine without internet access, e.g. with `python run.py --simulate`.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent / "static"

# The page loads only its own files and talks only to its own server.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Always revalidate: after an upgrade the page must not run an old script.
    "Cache-Control": "no-cache",
}


class DemoPage:
    def __init__(self, static_dir: Path = STATIC_DIR) -> None:
        self._static_dir = static_dir
        # Only the files shipped with the page are served, by their path under
        # static/ (e.g. "vendor/x.js"): no path from a request ever reaches the
        # file system.
        self._files = {p.relative_to(static_dir).as_posix(): p for p in sorted(static_dir.rglob("*")) if p.is_file()}

    def attach(self, app: web.Application) -> None:
        app.router.add_get("/", self.index)
        app.router.add_get("/static/{name:.+}", self.static)

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(self._files["index.html"], headers=SECURITY_HEADERS)

    async def static(self, request: web.Request) -> web.StreamResponse:
        path = self._files.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound(reason="no such file")
        return web.FileResponse(path, headers=SECURITY_HEADERS)
