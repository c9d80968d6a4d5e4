"""The viewer page at `/viewer`: static HTML, ES modules, CSS and the vendored libraries from
`service/viewer/` (docs/viewer.md).

No CDN and no build step at run time: every file comes from the package, so the page works on a
network without internet. Only the files present at start-up with a known type are served
(`index.html`, `viewer.css`, `js/*.js`, `vendor/*`); the npm sources in `vendor-src/` are not.
The page asks for a token (kept in sessionStorage, sent as the WebSocket subprotocol and the
Authorization header, never in a URL).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from service.errors import ApiError

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).with_name("viewer")
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".txt": "text/plain; charset=utf-8"}
FILES = {path.relative_to(STATIC).as_posix(): path
         for folder in (STATIC, STATIC / "js", STATIC / "vendor") if folder.is_dir()
         for path in sorted(folder.iterdir()) if path.suffix in TYPES and path.is_file()}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _file(name: str) -> FileResponse:
    path = FILES.get(name)
    if path is None:
        raise ApiError(404, "not_found", f"no viewer file {name[:40]}")
    return FileResponse(path, media_type=TYPES[path.suffix], headers=HEADERS)


@router.get("/viewer")
async def viewer_page() -> FileResponse:
    """The viewer."""
    return _file("index.html")


@router.get("/viewer/{name:path}")
async def viewer_asset(name: str) -> FileResponse:
    """Its modules, style sheets and vendored libraries."""
    return _file(name)
