"""Pages from Jinja2 templates, escaped by default, with the headers every console answer
carries: a strict Content-Security-Policy (no inline script, nothing from another origin),
no framing, no caching of pages that show a fleet's data."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from packager.manifest import format_time
from sync_service.index import aware_utc

HERE = Path(__file__).parent
STATIC = HERE / "static"

# 'wasm-unsafe-eval': the try-it panel compiles onnxruntime-web's WebAssembly; it allows
# WebAssembly.compile only, not eval() of JavaScript.
CSP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def when(value: datetime | str | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value.replace("T", " ").replace("Z", " UTC")
    return format_time(aware_utc(value)).replace("T", " ").replace("Z", " UTC")


def percent(value: float) -> str:
    return f"{value:g}%"


def size(length: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if length < 1024 or unit == "GiB":
            return f"{length:,} B" if unit == "B" else f"{length:.1f} {unit}"
        length /= 1024  # type: ignore[assignment]
    return str(length)


_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,  # a misspelt name fails the page's test, not renders blank
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(when=when, percent=percent, size=size)


def page(
    request: Request, template: str, context: dict[str, Any], *, status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    body = _env.get_template(template).render({"viewer": None, "error": None, **context, "request": request})
    return HTMLResponse(body, status_code=status_code, headers={**HEADERS, **(headers or {})})
