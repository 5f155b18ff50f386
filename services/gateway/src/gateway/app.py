"""Flask app factory. Nothing happens at import time: ``create_app()`` builds everything,
and the gRPC channel is opened on first use inside the serving process.

Run with gunicorn: ``gunicorn -c python:gateway.gunicorn_conf 'gateway.app:create_app()'``.
"""

from __future__ import annotations

from flask import Flask

from gateway.errors import register_error_handlers
from gateway.fetch import SafeFetcher
from gateway.guards import register_guards
from gateway.logs import configure_logging
from gateway.observability import register_request_hooks
from gateway.routes import KEYED_ENDPOINTS, api
from gateway.runtime import EXTENSION, Gateway
from gateway.settings import Settings
from gateway.site import register_site
from serving_contract.gateway_env import MIB


def create_app(settings: Settings | None = None, *, fetcher: SafeFetcher | None = None) -> Flask:
    settings = settings or Settings.from_env()
    gateway = Gateway.build(settings, fetcher)
    log = configure_logging()

    app = Flask("gateway", static_folder=None)  # the website serves its own (gateway.site)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = gateway
    register_request_hooks(app, gateway.metrics, log)
    register_guards(app, lambda: gateway.api_keys, KEYED_ENDPOINTS, settings.max_request_bytes)
    register_error_handlers(app, gateway.metrics, log, settings.max_request_bytes)
    app.register_blueprint(api)
    register_site(app, settings.hsts_max_age_s)
    memory = settings.decode_memory
    log.info(
        "decode memory",
        extra={"budget_mib": memory.budget_bytes // MIB, "source": memory.source},
    )
    return app
