"""Builds the Bolt app: one factory for HTTP mode, Socket Mode and the tests."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.container import Container
from bot.settings import Settings
from bot.slack import web_client
from handlers import register_listeners

log = logging.getLogger(__name__)


def build_app(settings: Settings, container: Container | None = None,
              client: AsyncWebClient | None = None) -> AsyncApp:
    """The Slack app with every listener registered. Call `settings.require_for_serve()` first."""
    if container is None:
        container = Container(settings, client or web_client(settings))
    secret = settings.slack_signing_secret
    app = AsyncApp(
        client=container.client,
        signing_secret=secret.get_secret_value() if secret else None,
        request_verification_enabled=not settings.socket_mode or secret is not None,
        # Listeners only parse, ack and spawn tracked tasks, so running them before the
        # response costs nothing and saves Bolt's ack-polling delay (~10 ms per request).
        process_before_response=True,
        name="hotdata",
    )

    @app.error
    async def on_error(error: Exception, body: dict[str, Any]) -> None:
        log.error("unhandled error in a Slack listener (%s): %s",
                  body.get("command") or body.get("type"), container.settings.scrub(str(error)))

    @app.middleware
    async def provide_container(context: AsyncBoltContext, next: Callable[[], Awaitable[None]]
                                ) -> None:
        context["container"] = container  # the listeners take it from here
        await next()

    register_listeners(app)
    return app
