"""Builds the Bolt app: one factory for HTTP mode, Socket Mode and the tests."""

from __future__ import annotations

import logging

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.services import Services
from bot.settings import Settings
from bot.slack import web_client
from handlers import register_listeners

log = logging.getLogger(__name__)


def build_app(settings: Settings, services: Services | None = None,
              client: AsyncWebClient | None = None) -> AsyncApp:
    """The Slack app with every listener registered. Call `settings.require_for_serve()` first."""
    if services is None:
        services = Services(settings, client or web_client(settings))
    secret = settings.slack_signing_secret
    app = AsyncApp(
        client=services.client,
        signing_secret=secret.get_secret_value() if secret else None,
        request_verification_enabled=not settings.socket_mode or secret is not None,
        # Listeners only parse, ack and spawn tracked tasks, so running them before the
        # response costs nothing and saves Bolt's ack-polling delay (~10 ms per request).
        process_before_response=True,
        name="hotdata",
    )

    @app.error
    async def on_error(error: Exception, body: dict) -> None:
        log.error("unhandled error in a Slack listener (%s): %s",
                  body.get("command") or body.get("type"), services.safe(str(error)))

    register_listeners(app, services)
    return app
