"""Modal submissions: a schema plan to review, the reason for a rejection."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext

from bot.flows import approvals, schema
from bot.render.proposals import REASON_CALLBACK
from bot.render.schema import REVIEW_CALLBACK
from handlers.context import container_of, ephemeral_in, hand_off

MIN_REASON = 3


def _value(view: dict[str, Any], block: str) -> str:
    return str(view["state"]["values"][block][block].get("value") or "")


async def schema_review(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any],
                        context: AsyncBoltContext) -> None:
    """Any member may review a plan; the verdict goes to the channel the modal came from."""
    await ack()
    container = container_of(context)
    channel, user = view["private_metadata"], body["user"]["id"]
    hand_off(container, "schema review",
             schema.review_in_channel(container, channel, user, _value(view, "plan")),
             ephemeral_in(container, channel, user))


async def reject_reason(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any],
                        context: AsyncBoltContext) -> None:
    """The decision is authorised again when it is taken (anyone could submit a forged one)."""
    reason = _value(view, "reason").strip()
    if len(reason) < MIN_REASON:
        await ack(response_action="errors",
                  errors={"reason": "Say why, in a few words: the team will read it."})
        return
    await ack()
    container = container_of(context)
    user, proposal_id = body["user"]["id"], int(view["private_metadata"])
    hand_off(container, f"reject #{proposal_id}",
             approvals.reject_submitted(container, proposal_id, user, reason),
             ephemeral_in(container, container.settings.channel, user))


def register(app: AsyncApp) -> None:
    app.view(REVIEW_CALLBACK)(schema_review)
    app.view(REASON_CALLBACK)(reject_reason)
