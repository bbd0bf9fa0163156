"""`GET /` (the dashboard page) and `GET /dashboard/<asset>` (its scripts and styles): static files, no data, no key.

Only the files named in ASSETS are served; the page loads nothing from elsewhere (the Content-Security-Policy
allows this origin only), so it works offline.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from helpers.localapi.errors import not_found

STATIC_DIR = Path(__file__).resolve().parent / "static"
ASSET_PREFIX = "/dashboard/"
JS = "text/javascript; charset=utf-8"
ASSETS = {name: JS for name in ("app.js", "api.js", "dom.js", "chart.js", "jobs.js", "job.js", "files.js", "playground.js")}
ASSETS["style.css"] = "text/css; charset=utf-8"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

router = APIRouter(tags=["dashboard"], include_in_schema=False)


@router.get("/")
def page() -> FileResponse:
    """The dashboard's HTML (no data: the page asks for the key, then calls /v1)."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


@router.get(ASSET_PREFIX + "{name}")
def asset(name: str) -> FileResponse:
    """One of the dashboard's scripts or styles."""
    if name not in ASSETS:
        raise not_found(f"The dashboard has no file {name!r}.", param="name")
    return FileResponse(STATIC_DIR / name, media_type=ASSETS[name], headers=SECURITY_HEADERS)
