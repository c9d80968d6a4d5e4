"""The viewer page at `/viewer`: static HTML, JavaScript and CSS from `service/viewer/`.

No CDN, no build step: it works offline. The page asks for a token (kept in sessionStorage, sent
as the WebSocket subprotocol and the Authorization header, never in a URL) and draws the latest
volume's axial, coronal and sagittal slices and the global impedance curve.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from service.errors import ApiError

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).with_name("viewer")
MEDIA_TYPES = {"index.html": "text/html; charset=utf-8", "viewer.js": "text/javascript",
               "viewer.css": "text/css"}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self'; connect-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _file(name: str) -> FileResponse:
    if name not in MEDIA_TYPES:
        raise ApiError(404, "not_found", f"no viewer file {name[:40]}")
    return FileResponse(STATIC / name, media_type=MEDIA_TYPES[name], headers=HEADERS)


@router.get("/viewer")
async def viewer_page() -> FileResponse:
    """The viewer."""
    return _file("index.html")


@router.get("/viewer/{name}")
async def viewer_asset(name: str) -> FileResponse:
    """Its script and style sheet."""
    return _file(name)
