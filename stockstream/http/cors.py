"""CORS for the HTTP API (`/api/*` and the API descriptions), by CORS_ORIGINS.

The Socket.IO endpoint answers CORS requests itself (python-engineio's
`cors_allowed_origins`); these routes get the same origins through aiohttp-cors,
which answers preflight OPTIONS requests and adds the headers to every response
of a configured route, error responses included.
"""

from __future__ import annotations

from typing import Iterable

import aiohttp_cors
from aiohttp import web

ANY_ORIGIN = "*"
# Browsers send these on API calls: a bearer token and a JSON body.
ALLOWED_HEADERS = ("Authorization", "Content-Type")
PREFLIGHT_MAX_AGE = 600


def served_cross_origin(path: str, documents: Iterable[str]) -> bool:
    return path.startswith("/api/") or path in documents


def allow_api_cors(app: web.Application, origins: tuple[str, ...], documents: Iterable[str] = ()) -> None:
    """Answer CORS requests on every route registered so far under `/api/` (and the
    paths in `documents`) for `origins` ("*" for any). Call after adding the routes."""
    documents = set(documents)
    options = aiohttp_cors.ResourceOptions(allow_headers=ALLOWED_HEADERS, max_age=PREFLIGHT_MAX_AGE)
    allowed = [ANY_ORIGIN] if ANY_ORIGIN in origins else list(origins)
    cors = aiohttp_cors.setup(app, defaults={origin: options for origin in allowed})
    for route in list(app.router.routes()):
        if route.resource is not None and served_cross_origin(route.resource.canonical, documents):
            cors.add(route)
    app.on_response_prepare.append(_vary_on_origin)


async def _vary_on_origin(request: web.Request, response: web.StreamResponse) -> None:
    """aiohttp-cors (0.8.1) echoes the request's origin without `Vary: Origin`; a
    shared cache must not hand one origin's answer to another."""
    if "Origin" in request.headers and "Access-Control-Allow-Origin" in response.headers:
        vary = response.headers.get("Vary")
        if vary is None:
            response.headers["Vary"] = "Origin"
        elif "origin" not in vary.lower():
            response.headers["Vary"] = f"{vary}, Origin"
