"""Rendering of the provider's HTML error page, shared by the browser-facing views."""

from __future__ import annotations

from flask import Response, make_response, render_template

from devtools.dev_idp.context import current_context


def error_page(error: str, description: str, status: int = 400) -> Response:
    """An error shown to the user instead of redirecting anywhere."""
    html = render_template(
        "error.html",
        issuer=current_context().config.issuer,
        error=error,
        description=description,
    )
    response = make_response(html, status)
    response.headers["Cache-Control"] = "no-store"
    return response
