"""The `/hotdata` slash command router."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.advisor import lint
from bot.analysis.collect import MAX_TOP
from bot.analysis.runs import AnalysisBusy, run_in_channel
from bot.drills import service as drills
from bot.drills.runner import DrillRefused
from bot.proposals import service as proposals
from bot.render import lint as render_lint
from bot.render import proposals as render_proposals
from bot.render import schema as render_schema
from bot.render import status as render_status
from bot.reports import delivery
from bot.services import Services

COMMAND = "/hotdata"

USAGE = """*hotdata* — your PostgreSQL on call
`/hotdata help` — this text
`/hotdata analyze [top N]` — the slowest queries, their plans and what to fix (N from 1 to 50)
`/hotdata propose` — turn the latest recommendations into index migrations for approval
`/hotdata proposals` — pending and recent index migrations
`/hotdata drill` — restore the latest backup into a scratch database and verify it
`/hotdata report` — the periodic report, now
`/hotdata lint` — schema checks: missing indexes, RLS gaps, duplicate indexes
`/hotdata schema [schema-name]` — the schema's ERD, keys, indexes, RLS policies and grants
`/hotdata schema review` — paste planned DDL: lints, ERD additions, RLS and index proposals
`/hotdata status` — database, extensions, state schema and Slack connection"""

NO_ARGUMENTS = {"help", "status", "lint", "propose", "proposals", "drill", "report"}
DEFAULT_TOP = 5


def usage(problem: str | None = None) -> str:
    return f"{problem}\n\n{USAGE}" if problem else USAGE


def parse_top(words: list[str]) -> int:
    """`analyze`, `analyze top N` → N; ValueError with what is wrong otherwise."""
    if not words:
        return DEFAULT_TOP
    if len(words) == 2 and words[0].lower() == "top" and words[1].isdigit():
        top = int(words[1])
        if 1 <= top <= MAX_TOP:
            return top
        raise ValueError(f"`top` must be between 1 and {MAX_TOP}, got {top}.")
    raise ValueError(f"`/hotdata analyze` takes `top N`, got `{' '.join(words)[:80]}`.")


def register(app: AsyncApp, services: Services) -> None:
    @app.command(COMMAND)
    async def hotdata(ack: AsyncAck, command: dict, respond: AsyncRespond,
                      client: AsyncWebClient) -> None:
        words = (command.get("text") or "").split()
        sub = words[0].lower() if words else "help"
        if sub == "help" and len(words) <= 1:
            await ack(response_type="ephemeral", text=usage())
        elif sub == "status" and len(words) == 1:
            await ack(response_type="ephemeral", text="Checking hotdata's status…")
            services.tasks.spawn(_status(services, respond), name="status",
                                 on_error=_report_failure(services, respond, "status"))
        elif sub == "analyze":
            try:
                top = parse_top(words[1:])
            except ValueError as problem:
                await ack(response_type="ephemeral", text=usage(str(problem)))
                return
            await ack(response_type="ephemeral",
                      text=f"Analysing the {top} slowest statements; results will appear here.")
            services.tasks.spawn(
                _analyze(services, respond, command["channel_id"], command["user_id"], top),
                name="analyze", on_error=_report_failure(services, respond, "analyze"))
        elif sub == "lint" and len(words) == 1:
            await ack(response_type="ephemeral", text="Checking the schema…")
            services.tasks.spawn(_lint(services, respond), name="lint",
                                 on_error=_report_failure(services, respond, "lint"))
        elif sub == "schema" and len(words) == 2 and words[1].lower() == "review":
            await ack()
            await client.views_open(trigger_id=command["trigger_id"],
                                    view=render_schema.review_modal(command["channel_id"]))
        elif sub == "schema":
            if len(words) > 2:
                await ack(response_type="ephemeral", text=usage(
                    f"`/hotdata schema` takes one schema name, got `{' '.join(words[1:])[:80]}`."))
                return
            schema = words[1] if len(words) == 2 else "public"
            await ack(response_type="ephemeral",
                      text=f"Documenting schema {schema[:63]}; the ERD will appear in this "
                           "channel.")
            services.tasks.spawn(_schema(services, respond, command["channel_id"], schema),
                                 name="schema",
                                 on_error=_report_failure(services, respond, "schema"))
        elif sub == "propose" and len(words) == 1:
            await ack(response_type="ephemeral",
                      text="Proposing the latest recommendations for approval…")
            services.tasks.spawn(_propose(services, respond, command["user_id"]),
                                 name="propose",
                                 on_error=_report_failure(services, respond, "propose"))
        elif sub == "proposals" and len(words) == 1:
            await ack(response_type="ephemeral", text="Looking up index migrations…")
            services.tasks.spawn(_proposals(services, respond), name="proposals",
                                 on_error=_report_failure(services, respond, "proposals"))
        elif sub == "drill" and len(words) == 1:
            await ack(response_type="ephemeral",
                      text="Starting a restore drill; progress and the result will appear here.")
            services.tasks.spawn(_drill(services, respond, command["channel_id"],
                                        command["user_id"]),
                                 name="drill", on_error=_report_failure(services, respond, "drill"))
        elif sub == "report" and len(words) == 1:
            await ack(response_type="ephemeral", text="Building the report for this channel…")
            services.tasks.spawn(delivery.post(services, command["channel_id"]), name="report",
                                 on_error=_report_failure(services, respond, "report"))
        elif sub in NO_ARGUMENTS:
            extra = " ".join(words[1:])[:80]
            await ack(response_type="ephemeral",
                      text=usage(f"`/hotdata {sub}` takes no arguments, got `{extra}`."))
        else:
            await ack(response_type="ephemeral",
                      text=usage(f"Unknown subcommand `{words[0][:40]}`."))


async def _status(services: Services, respond: AsyncRespond) -> None:
    found = await services.status()
    await respond(response_type="ephemeral", text=render_status.headline(found),
                  blocks=render_status.blocks(found), replace_original=False)


async def _lint(services: Services, respond: AsyncRespond) -> None:
    report = await lint.run(services.settings)
    await respond(response_type="ephemeral", text=services.safe(render_lint.headline(report)),
                  blocks=render_lint.blocks(report), replace_original=False)


async def _schema(services: Services, respond: AsyncRespond, channel: str,
                  schema: str) -> None:
    from bot.render import schema as render_schema
    from bot.schema import document

    doc = await document.run(services.settings, schema)
    if doc.tables:
        await services.pace(channel)
        await services.client.files_upload_v2(
            channel=channel, file=await document.png(doc.schema, doc.tables),
            filename=f"hotdata-erd-{doc.schema}.png", title=f"ERD of schema {doc.schema}")
    await respond(response_type="ephemeral", replace_original=False,
                  text=services.safe(render_schema.headline(doc)),
                  blocks=render_schema.blocks(doc))


async def _propose(services: Services, respond: AsyncRespond, user: str) -> None:
    try:
        created = await proposals.propose(services, user)
    except proposals.NothingToPropose as nothing:
        text = str(nothing)
    else:
        text = (f"Proposed {len(created)} index migration(s) in <#{services.settings.channel}> "
                "for a manager's approval." if created
                else "Every recommendation of the latest analysis is already proposed.")
    await respond(response_type="ephemeral", replace_original=False, text=text)


async def _drill(services: Services, respond: AsyncRespond, channel: str, user: str) -> None:
    try:
        await drills.run_in_channel(services, channel, user)
    except DrillRefused as refused:
        await respond(response_type="ephemeral", replace_original=False, text=str(refused))


async def _proposals(services: Services, respond: AsyncRespond) -> None:
    rows = await proposals.recent(services)
    await respond(response_type="ephemeral", replace_original=False,
                  text=render_proposals.listing(rows))


async def _analyze(services: Services, respond: AsyncRespond, channel: str, user: str,
                   top: int) -> None:
    try:
        await run_in_channel(services, channel, user, top)
    except AnalysisBusy as busy:
        await respond(response_type="ephemeral", replace_original=False, text=str(busy))


def _report_failure(services: Services, respond: AsyncRespond,
                    what: str) -> Callable[[BaseException], Awaitable[None]]:
    async def report(error: BaseException) -> None:
        reason = str(error)
        if isinstance(error, SlackApiError) and error.response.get("error") in (
                "not_in_channel", "channel_not_found"):
            reason = "hotdata is not a member of this channel: invite it with `/invite @hotdata`"
        await respond(response_type="ephemeral", replace_original=False,
                      text=services.safe(f"hotdata could not finish `{what}`: {reason}"))
    return report
