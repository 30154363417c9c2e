"""Buttons: Approve / Reject on proposals, Propose migration on an analysis."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.flows import proposals
from bot.render.proposals import APPROVE, PROPOSE, REJECT
from handlers.context import container_of, hand_off, respond_to


def clicked(body: dict[str, Any]) -> tuple[str, int | None]:
    """Who clicked, and the id the button carries (None when it carries no plain number)."""
    value = str(body["actions"][0].get("value", ""))
    return body["user"]["id"], int(value) if value.isascii() and value.isdigit() else None


async def approve(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond,
                  context: AsyncBoltContext) -> None:
    await ack()
    container = container_of(context)
    user, proposal_id = clicked(body)
    reply = respond_to(respond, container)
    hand_off(container, f"approve #{proposal_id}",
             proposals.approve_clicked(container, reply, proposal_id, user), reply)


async def reject(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond,
                 context: AsyncBoltContext) -> None:
    await ack()
    container = container_of(context)
    user, proposal_id = clicked(body)
    reply = respond_to(respond, container)
    hand_off(container, f"reject #{proposal_id}",
             proposals.reject_clicked(container, reply, proposal_id, user, body["trigger_id"]),
             reply)


async def propose(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond,
                  context: AsyncBoltContext) -> None:
    await ack()
    container = container_of(context)
    user, analysis_id = clicked(body)
    reply = respond_to(respond, container)
    hand_off(container, "propose", proposals.propose_for(container, reply, user, analysis_id),
             reply)


def register(app: AsyncApp) -> None:
    app.action(APPROVE)(approve)
    app.action(REJECT)(reject)
    app.action(PROPOSE)(propose)
