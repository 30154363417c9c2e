"""Buttons: Approve / Reject on proposals, Apply now on a queued one, Propose rollback on an
applied one, Propose migration on an analysis. Each acks, reads who clicked and the id the
button carries, and hands its flow off."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.container import Container
from bot.flows import approvals, proposals
from bot.proposals import binding
from bot.render.proposals import APPLY_NOW, APPROVE, PROPOSE, REJECT, ROLLBACK
from bot.slack import Reply
from handlers.context import container_of, hand_off, respond_to

Click = Callable[[AsyncAck, dict[str, Any], AsyncRespond, AsyncBoltContext], Awaitable[None]]
# (container, reply, who clicked, the id the button carries, the request) → the flow to run
Flow = Callable[[Container, Reply, str, int | None, dict[str, Any]], Coroutine[Any, Any, Any]]


def value(body: dict[str, Any]) -> str:
    return str(body["actions"][0].get("value", ""))


def clicked(body: dict[str, Any]) -> tuple[str, int | None]:
    """Who clicked, and the id the button carries (None when it carries no plain number)."""
    return body["user"]["id"], binding.parse(value(body))[0]


def button(what: str, flow: Flow) -> Click:
    async def listener(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond,
                       context: AsyncBoltContext) -> None:
        await ack()
        container = container_of(context)
        user, carried = clicked(body)
        reply = respond_to(respond, container)
        hand_off(container, f"{what} #{carried}" if carried is not None else what,
                 flow(container, reply, user, carried, body), reply)
    return listener


approve = button("approve", lambda container, reply, user, proposal_id, body:
                 approvals.approve_clicked(container, reply, proposal_id, user,
                                           binding.parse(value(body))[1]))
reject = button("reject", lambda container, reply, user, proposal_id, body:
                approvals.reject_clicked(container, reply, proposal_id, user,
                                         body["trigger_id"]))
propose = button("propose", lambda container, reply, user, analysis_id, body:
                 proposals.propose_for(container, reply, user, analysis_id))
apply_now = button("apply now", lambda container, reply, user, proposal_id, body:
                   approvals.apply_now_clicked(container, reply, proposal_id, user))
rollback = button("rollback", lambda container, reply, user, proposal_id, body:
                  proposals.rollback_clicked(container, reply, proposal_id, user))


def register(app: AsyncApp) -> None:
    app.action(APPROVE)(approve)
    app.action(REJECT)(reject)
    app.action(PROPOSE)(propose)
    app.action(ROLLBACK)(rollback)
    app.action(APPLY_NOW)(apply_now)
