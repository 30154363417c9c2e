"""The reject-reason modal."""

from __future__ import annotations

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.proposals import service
from bot.render import schema as render_schema
from bot.schema import review as schema
from bot.services import Services


def register(app: AsyncApp, services: Services) -> None:
    @app.view(render_schema.REVIEW_CALLBACK)
    async def schema_review(ack: AsyncAck, body: dict, view: dict,
                            client: AsyncWebClient) -> None:
        await ack()
        plan = view["state"]["values"]["plan"]["plan"].get("value") or ""
        channel, user = view["private_metadata"], body["user"]["id"]

        async def failed(error: BaseException) -> None:
            await client.chat_postEphemeral(channel=channel, user=user, text=services.safe(
                f"hotdata could not review your schema plan: {error}"))

        services.tasks.spawn(schema.review_in_channel(services, channel, user, plan),
                             name="schema-review", on_error=failed)

    @app.view("hotdata_reject_reason")
    async def reject_reason(ack: AsyncAck, body: dict, view: dict,
                            client: AsyncWebClient) -> None:
        reason = (view["state"]["values"]["reason"]["reason"].get("value") or "").strip()
        if len(reason) < 3:
            await ack(response_action="errors",
                      errors={"reason": "Say why, in a few words: the team will read it."})
            return
        await ack()
        user = body["user"]["id"]
        proposal_id = int(view["private_metadata"])

        async def work() -> None:
            outcome = await service.reject(services, proposal_id, user, reason)
            if not outcome.startswith("Rejected") and services.settings.channel:
                await client.chat_postEphemeral(channel=services.settings.channel, user=user,
                                                text=outcome)

        services.tasks.spawn(work(), name=f"reject-{proposal_id}")
