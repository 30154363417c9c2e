"""Buttons: Approve / Reject on proposals, Propose migration on an analysis."""

from __future__ import annotations

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.proposals import service
from bot.render import proposals as render
from bot.services import Services


def _ids(body: dict) -> tuple[str, int | None]:
    value = body["actions"][0].get("value", "")
    return body["user"]["id"], int(value) if value.isdigit() else None


def register(app: AsyncApp, services: Services) -> None:
    async def tell(respond: AsyncRespond, text: str) -> None:
        await respond(response_type="ephemeral", replace_original=False, text=text)

    @app.action(render.APPROVE)
    async def approve(ack: AsyncAck, body: dict, respond: AsyncRespond) -> None:
        await ack()
        user, proposal_id = _ids(body)
        if proposal_id is None:
            await tell(respond, "This button does not carry a proposal id.")
            return

        async def work() -> None:
            refusal = await service.decision_refused(services, proposal_id, user, "approve")
            if refusal is not None:  # checked here, and again inside service.approve
                await tell(respond, refusal)
                return
            await tell(respond, await service.approve(services, proposal_id, user))

        services.tasks.spawn(work(), name=f"approve-{proposal_id}",
                             on_error=lambda e: tell(respond, services.safe(
                                 f"hotdata could not approve #{proposal_id}: {e}")))

    @app.action(render.REJECT)
    async def reject(ack: AsyncAck, body: dict, respond: AsyncRespond,
                     client: AsyncWebClient) -> None:
        await ack()
        user, proposal_id = _ids(body)
        if proposal_id is None:
            await tell(respond, "This button does not carry a proposal id.")
            return
        refusal = await service.decision_refused(services, proposal_id, user, "reject")
        if refusal is not None:
            await tell(respond, refusal)
            return
        await client.views_open(trigger_id=body["trigger_id"],
                                view=render.reject_modal(proposal_id))

    @app.action(render.PROPOSE)
    async def propose(ack: AsyncAck, body: dict, respond: AsyncRespond) -> None:
        await ack()
        user, analysis_id = _ids(body)

        async def work() -> None:
            try:
                created = await service.propose(services, user, analysis_id)
            except service.NothingToPropose as nothing:
                await tell(respond, str(nothing))
                return
            await tell(respond, f"Proposed {len(created)} index migration(s) for approval."
                       if created else "Every recommendation is already proposed.")

        services.tasks.spawn(work(), name="propose",
                             on_error=lambda e: tell(respond, services.safe(
                                 f"hotdata could not propose: {e}")))
