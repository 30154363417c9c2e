"""The `/hotdata` slash command: a table of subcommands, each with how its words are read,
what the ack says and the flow it hands off to."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.analysis.collect import MAX_TOP
from bot.container import Container
from bot.errors import UserError
from bot.flows import analysis, drills, lint, proposals, reports, schema, status
from bot.slack import Reply
from handlers.context import container_of, hand_off, respond_to

COMMAND = "/hotdata"

USAGE = """*hotdata* — your PostgreSQL on call
`/hotdata help` — this text
`/hotdata analyze [top N]` — the slowest queries, their plans and what to fix (N from 1 to 50)
`/hotdata analyze compare` — what changed between the last two analyses: plans and times
`/hotdata propose` — turn the latest recommendations into index migrations for approval
`/hotdata proposals` — pending and recent index migrations
`/hotdata drill` — restore the latest backup into a scratch database and verify it
`/hotdata drill history [N]` — the last N drills' RTO and RPO (default 10): chart, trend, forecast
`/hotdata report` — the periodic report, now
`/hotdata lint` — schema checks: missing indexes, RLS gaps, duplicate indexes
`/hotdata schema [schema-name]` — the schema's ERD, keys, indexes, RLS policies and grants
`/hotdata schema review` — paste planned DDL: lints, ERD additions, RLS and index proposals
`/hotdata status` — database, extensions, state schema and Slack connection"""

DEFAULT_TOP = 5
REVIEW = "review"  # `/hotdata schema review`: the modal, not a schema named review
COMPARE = "compare"  # `/hotdata analyze compare`: the last two analyses, not a new one


class Usage(UserError):
    """The words do not fit the subcommand; the message says how they should read."""


def usage(problem: str | None = None) -> str:
    return f"{problem}\n\n{USAGE}" if problem else USAGE


@dataclass(frozen=True)
class Asked:
    """Where and by whom a command was typed."""
    channel: str
    user: str
    trigger_id: str


Flow = Callable[[Container, Reply, Asked, Any], Coroutine[Any, Any, object]]


@dataclass(frozen=True)
class Subcommand:
    parse: Callable[[str, list[str]], Any]  # the words after the name → the flow's argument
    ack: Callable[[Any], str]  # "" acknowledges without a message
    run: Flow | None = None  # None: the ack is the whole answer


def no_arguments(name: str, words: list[str]) -> None:
    if words:
        raise Usage(f"`/hotdata {name}` takes no arguments, got `{' '.join(words)[:80]}`.")


def parse_top(name: str, words: list[str]) -> int:
    """`analyze`, `analyze top N` → N."""
    if not words:
        return DEFAULT_TOP
    if len(words) == 2 and words[0].lower() == "top" and words[1].isascii() \
            and words[1].isdigit():
        top = int(words[1])
        if 1 <= top <= MAX_TOP:
            return top
        raise Usage(f"`top` must be between 1 and {MAX_TOP}, got {top}.")
    raise Usage(f"`/hotdata {name}` takes `top N`, got `{' '.join(words)[:80]}`.")


def parse_analyze(name: str, words: list[str]) -> int | str:
    """`analyze`, `analyze top N` → N; `analyze compare` → COMPARE."""
    if len(words) == 1 and words[0].lower() == COMPARE:
        return COMPARE
    return parse_top(name, words)


def parse_schema(name: str, words: list[str]) -> str:
    """`schema` → public, `schema NAME` → NAME, `schema review` → REVIEW."""
    if len(words) > 1:
        raise Usage(f"`/hotdata {name}` takes one schema name, got `{' '.join(words)[:80]}`.")
    if words and words[0].lower() == REVIEW:
        return REVIEW
    return words[0] if words else "public"


def parse_drill(name: str, words: list[str]) -> int | None:
    """`drill` → None (run one), `drill history [N]` → how many past drills to show."""
    if not words:
        return None
    if words[0].lower() == "history" and len(words) <= 2:
        if len(words) == 1:
            return drills.HISTORY
        if words[1].isascii() and words[1].isdigit() and 1 <= int(words[1]) <= drills.MAX_HISTORY:
            return int(words[1])
        raise Usage(f"`history` takes a number of drills from 1 to {drills.MAX_HISTORY}, got "
                    f"`{words[1][:40]}`.")
    raise Usage(f"`/hotdata {name}` takes nothing or `history [N]`, got "
                f"`{' '.join(words)[:80]}`.")


async def _schema(container: Container, reply: Reply, asked: Asked, name: str) -> object:
    if name == REVIEW:
        await schema.open_review(container, asked.trigger_id, asked.channel)
        return None
    return await schema.document_in_channel(container, reply, asked.channel, name)


SUBCOMMANDS: dict[str, Subcommand] = {
    "help": Subcommand(no_arguments, lambda _: USAGE),
    "status": Subcommand(no_arguments, lambda _: "Checking hotdata's status…",
                         lambda c, reply, asked, _: status.status(c, reply)),
    "analyze": Subcommand(
        parse_analyze, lambda top: "Comparing the last two analyses…" if top == COMPARE else
        f"Analysing the {top} slowest statements; results will appear here.",
        lambda c, reply, asked, top: analysis.compare(c, reply) if top == COMPARE else
        analysis.run_in_channel(c, asked.channel, asked.user, top)),
    "lint": Subcommand(no_arguments, lambda _: "Checking the schema…",
                       lambda c, reply, asked, _: lint.lint_schema(c, reply)),
    "schema": Subcommand(
        parse_schema, lambda name: "" if name == REVIEW else
        f"Documenting schema {name[:63]}; the ERD will appear in this channel.", _schema),
    "propose": Subcommand(no_arguments,
                          lambda _: "Proposing the latest recommendations for approval…",
                          lambda c, reply, asked, _: proposals.propose_for(c, reply, asked.user)),
    "proposals": Subcommand(no_arguments, lambda _: "Looking up index migrations…",
                            lambda c, reply, asked, _: proposals.list_for(c, reply)),
    "drill": Subcommand(
        parse_drill,
        lambda last: "Starting a restore drill; progress and the result will appear here."
        if last is None else f"Looking up the last {last} restore drills…",
        lambda c, reply, asked, last: drills.run_in_channel(c, asked.channel, asked.user)
        if last is None else drills.history_in_channel(c, reply, asked.channel, last)),
    "report": Subcommand(no_arguments, lambda _: "Building the report for this channel…",
                         lambda c, reply, asked, _: reports.post(c, asked.channel)),
}


async def hotdata(ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond,
                  context: AsyncBoltContext) -> None:
    words = str(command.get("text") or "").split()
    name = words[0].lower() if words else "help"
    sub = SUBCOMMANDS.get(name)
    if sub is None:
        await ack(response_type="ephemeral", text=usage(f"Unknown subcommand `{words[0][:40]}`."))
        return
    try:
        argument = sub.parse(name, words[1:])
    except Usage as problem:
        await ack(response_type="ephemeral", text=usage(str(problem)))
        return
    text = sub.ack(argument)
    await (ack(response_type="ephemeral", text=text) if text else ack())
    if sub.run is not None:
        container = container_of(context)
        reply = respond_to(respond, container)
        asked = Asked(command["channel_id"], command["user_id"], command.get("trigger_id", ""))
        hand_off(container, name, sub.run(container, reply, asked, argument), reply)


def register(app: AsyncApp) -> None:
    app.command(COMMAND)(hotdata)
