"""The website at ``/``: one page, its script, stylesheet and icon, served by the gateway
itself, so the page and ``/predict`` share an origin and need no CORS.

Everything the page loads comes from here (no CDN, no font, no inline script or style), so
it works offline and under a Content-Security-Policy that allows this origin only. Asset
URLs carry a digest of their content: browsers keep them for a year, and a release with
changed files changes the URLs. The page itself is revalidated on every load (ETag), so it
always names the current assets. No build step: the files are served as they are written.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from flask import (
    Blueprint,
    Flask,
    Response,
    make_response,
    render_template,
    request,
    send_from_directory,
)
from werkzeug.exceptions import NotFound

from gateway.errors import ERRORS
from gateway.runtime import current_gateway
from serving_contract.gateway_env import mib

SITE = Path(__file__).resolve().parent / "site"
ASSETS = SITE / "static"
YEAR_S = 365 * 24 * 3600
# The page calls an answer unsure when its top class has a probability below this: then,
# by the model's own estimate, the picture is more likely something else than that class.
# It is the one threshold a person reads the same way whatever the number of classes
# (against 1/classes, 2x chance is 20% with ten classes: four answers in five wrong), and
# it is lenient, not strict: networks like this one are overconfident rather than shy, so a
# top class below 50% is doubtful indeed. The API answers the probabilities and leaves the
# threshold to its callers, who may need another one.
UNSURE_BELOW = 0.5

# Only this origin, for everything; images also from blob: (a chosen file's preview) and
# from any web address (the picture a pasted link points to, shown as the browser loads it).
PAGE_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: https: http:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)

site = Blueprint("site", __name__, template_folder=str(SITE))


def register_site(app: Flask, hsts_max_age_s: int) -> None:
    """The website, and (when TLS ends in front of the gateway) Strict-Transport-Security
    on every answer, so browsers never again try the site over plain HTTP."""
    app.register_blueprint(site)
    if hsts_max_age_s:
        policy = f"max-age={hsts_max_age_s}"

        @app.after_request
        def _hsts(response: Response) -> Response:
            response.headers["Strict-Transport-Security"] = policy
            return response


# The only files /static serves, by name, with the digest of their content: a request names
# one of these exactly or gets 404 (no path is ever built from what a client sent).
DIGESTS = {
    path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    for path in sorted(ASSETS.iterdir())
    if path.is_file()
}


def asset_url(name: str) -> str:
    """``/static/<name>?v=<digest of its content>``."""
    return f"/static/{name}?v={DIGESTS[name]}"


@site.after_request
def _page_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = PAGE_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@site.get("/")
def index() -> Response:
    gateway = current_gateway()
    settings = gateway.settings
    html = render_template(
        "index.html",
        asset_url=asset_url,
        api_keys_on=gateway.api_keys is not None,
        error_words={code: kind.plain for code, kind in ERRORS.items()},
        max_image_size=mib(settings.fetch.max_bytes),
        max_image_bytes=settings.fetch.max_bytes,
        unsure_below=UNSURE_BELOW,
    )
    response = make_response(html)
    response.cache_control.no_cache = True
    response.add_etag()
    response.make_conditional(request)
    return response


@site.get("/static/<path:filename>")
def asset(filename: str) -> Response:
    digest = DIGESTS.get(filename)
    if digest is None:
        raise NotFound("no such file")
    current = request.args.get("v") == digest
    response = send_from_directory(ASSETS, filename, max_age=YEAR_S if current else None)
    if current:
        response.cache_control.immutable = True
    else:  # an old or missing digest: usable, but checked again next time
        response.cache_control.no_cache = True
    return response
