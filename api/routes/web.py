"""The web UI: ``/`` serves the single page, ``/web/...`` its scripts, styles and vendored libs.

Mounted outside the ``/v1`` auth dependency: the page holds no data; it asks for a token and
sends it with every ``/v1`` call it makes.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from starlette.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
# Revalidate every time (ETag / Last-Modified answer 304): an upgrade shows up on reload.
NO_CACHE = {"Cache-Control": "no-cache"}

router = APIRouter(tags=["web"], include_in_schema=False)
_files = StaticFiles(directory=WEB_DIR)


@router.api_route("/", methods=["GET", "HEAD"])
def index() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", media_type="text/html", headers=NO_CACHE)


@router.get("/ui")
def ui() -> RedirectResponse:
    return RedirectResponse("/")


@router.api_route("/web/{path:path}", methods=["GET", "HEAD"])
async def web_file(path: str, request: Request) -> Response:
    """A file under ``api/web`` (StaticFiles refuses paths that leave it and answers 404)."""
    response = await _files.get_response(path, request.scope)
    response.headers.update(NO_CACHE)
    return response
