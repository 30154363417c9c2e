"""The `hotdata` command line: the same flows as the Slack commands, for a terminal."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg

from bot import migrate
from bot.advisor.pipeline import BadRequest, analyze
from bot.analysis.collect import WatchedQueriesError
from bot.db import DatabaseUnavailable, connect
from bot.dsn import scrub
from bot.migrate import MigrationError
from bot.settings import ConfigError, Settings, load_settings

# Each command imports what only it needs (the terminal renderer, lint, the checks…): every
# start of the command line pays for what is imported here.

FORMATS = ("text", "markdown", "json")

Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


def _common(parser: argparse.ArgumentParser, *, reports: bool = True) -> None:
    parser.add_argument("--dsn", help="target database URL (overrides HOTDATA_DATABASE_URL)")
    if reports:
        parser.add_argument("--format", choices=FORMATS, default="text",
                            help="output format (default: text)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hotdata",
        description="hotdata: query analysis, approved index migrations, restore drills and "
                    "reports for PostgreSQL, from Slack or this terminal.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the Slack bot (HTTP mode, or Socket Mode when "
                                     "SLACK_APP_TOKEN is set)")
    _common(p, reports=False)
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--demo", action="store_true",
                   help="serve a throwaway HotDash database instead of HOTDATA_DATABASE_URL "
                        "(your Slack app's tokens still come from the environment)")
    p.set_defaults(run=_serve)

    p = sub.add_parser("analyze", help="the slowest queries, their plans and fixes")
    _common(p)
    p.add_argument("--top", type=int, default=5, help="how many statements (1-50, default 5)")
    p.add_argument("--compare", action="store_true", help="instead of analysing, compare the "
                   "last two stored analyses: plans that changed, times before and after")
    p.set_defaults(run=_analyze)

    p = sub.add_parser("propose", help="write index migrations from the latest recommendations")
    _common(p)
    p.add_argument("--out", metavar="DIR", help="directory for the migration files")
    p.set_defaults(run=_propose)

    p = sub.add_parser("proposals", help="the index migrations and their state (pending first)")
    _common(p, reports=False)
    p.set_defaults(run=_proposals)

    p = sub.add_parser("approve", help="approve a pending index migration as a manager (its "
                                       "Slack card is updated)")
    _common(p, reports=False)
    p.add_argument("id", type=int, help="the index migration's number")
    p.add_argument("sha256", help="the statement digest its card shows (12 hex digits)")
    p.add_argument("--as", dest="user", required=True, metavar="SLACK_USER_ID",
                   help="your Slack user ID: a manager's, counted as theirs")
    p.set_defaults(run=_decide)

    p = sub.add_parser("reject", help="reject a pending index migration as a manager (its "
                                      "Slack card is updated)")
    _common(p, reports=False)
    p.add_argument("id", type=int, help="the index migration's number")
    p.add_argument("--as", dest="user", required=True, metavar="SLACK_USER_ID",
                   help="your Slack user ID: a manager's")
    p.add_argument("--reason", required=True, help="why, shown on the card")
    p.set_defaults(run=_decide)

    p = sub.add_parser("drill", help="restore the latest backup into a scratch database and "
                                     "verify it")
    _common(p)
    p.add_argument("--scratch-dsn", metavar="URL", help="server for the scratch database "
                                                       "(overrides HOTDATA_DRILL_DATABASE_URL)")
    p.add_argument("--runbook", metavar="PATH", help="instead of drilling, rewrite the "
                   "runbook's 'last measured' section from the latest passing drill")
    p.add_argument("--history", type=int, nargs="?", const=10, metavar="N",
                   help="instead of drilling, the last N drills' RTO and RPO, trend and forecast")
    p.set_defaults(run=_drill)

    p = sub.add_parser("report", help="the periodic report, now (printed; --post sends it to "
                                      "HOTDATA_CHANNEL)")
    _common(p)
    p.add_argument("--post", action="store_true", help="post it to HOTDATA_CHANNEL too")
    p.set_defaults(run=_report)

    p = sub.add_parser("lint", help="schema checks: missing indexes, RLS gaps, duplicates")
    _common(p)
    p.set_defaults(run=_lint)

    p = sub.add_parser("schema", help="document a schema (ERD, keys, indexes, RLS, grants, "
                                      "lints), or `schema review PLAN.sql` on a scratch copy")
    _common(p)
    p.add_argument("words", nargs="*", metavar="ARG",
                   help="[schema-name] (default public), or: review PLAN.sql")
    p.add_argument("--out", metavar="DIR", help="review: directory for the migration stubs "
                                                "and the spec")
    p.set_defaults(run=_schema)

    p = sub.add_parser("db", help="hotdata's own state schema")
    db_sub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = db_sub.add_parser("upgrade", help="apply pending state-schema migrations")
    _common(up, reports=False)
    up.set_defaults(run=_db_upgrade)

    p = sub.add_parser("demo", help="the whole story on a throwaway local database")
    p.add_argument("--scale", type=float, default=0.25,
                   help="size of the HotDash sample (1.0 = 200,000 notifications; default 0.25)")
    p.add_argument("--yes", action="store_true", help="do not ask anything (for scripts)")
    p.set_defaults(run=_demo)

    p = sub.add_parser("doctor", help="check databases, extensions, state schema and Slack")
    _common(p)
    p.set_defaults(run=_doctor)
    return parser


def _show(fmt: str, result: Any, renderer: ModuleType) -> None:
    """Print a result the way --format asks, with its bot.render module."""
    if fmt == "json":
        print(renderer.as_json(result))
    elif fmt == "markdown":
        print(renderer.markdown(result))
    else:
        from rich.console import Console

        renderer.print_text(result, Console())


async def _analyze(args: argparse.Namespace, settings: Settings) -> int:
    from bot.render import analysis as render

    if args.compare:
        from bot.analysis import plan_history
        from bot.render import plans

        async with connect(settings, "state") as conn:
            await migrate.upgrade(conn)
            found = await plan_history.compare_latest(conn)
        print(plans.comparison(found, settings.plan_regression_ratio))
        return 0

    _show(args.format, await analyze(settings, top=args.top), render)
    return 0


async def _lint(args: argparse.Namespace, settings: Settings) -> int:
    from bot.advisor import lint
    from bot.render import lint as render

    _show(args.format, await lint.run(settings), render)
    return 0


async def _schema(args: argparse.Namespace, settings: Settings) -> int:
    from bot.flows.schema import review_plan
    from bot.render import schema as render
    from bot.schema import document, sandbox

    if args.words[:1] == ["review"]:
        if len(args.words) != 2:
            print("hotdata: usage: hotdata schema review PLAN.sql [--out DIR]", file=sys.stderr)
            return 2
        plan = Path(args.words[1])
        try:
            text = plan.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = ("it is not UTF-8 text" if isinstance(error, UnicodeDecodeError)
                      else error.strerror or str(error))
            print(f"hotdata: cannot read the plan {plan}: {reason}", file=sys.stderr)
            return 2
        async with connect(settings, "state") as conn:  # reviews record their sandboxes
            await migrate.upgrade(conn)
        await sandbox.drop_leftovers(settings)
        result = await review_plan(settings, text, name=plan.stem,
                                   out=Path(args.out) if args.out else None)
        print(render.review_json(result) if args.format == "json"
              else render.review_markdown(result))
        return {"ok": 0, "refused": 2}.get(result.status, 1)
    if len(args.words) > 1:
        print("hotdata: usage: hotdata schema [schema-name]", file=sys.stderr)
        return 2
    doc = await document.run(settings, args.words[0] if args.words else "public")
    print(render.as_json(doc) if args.format == "json" else render.markdown(doc))
    return 0


async def _demo(args: argparse.Namespace, settings: Settings | None) -> int:
    from bot import demo

    if args.command == "serve":
        return await demo.serve()
    return await demo.run(scale=args.scale)


async def _propose(args: argparse.Namespace, settings: Settings) -> int:
    """Analyse now, store the analysis, and turn its recommendations into pending proposals:
    migration files in --out (or HOTDATA_MIGRATIONS_DIR), posted for approval when Slack is
    configured."""
    from bot.container import Container
    from bot.flows import proposals
    from bot.flows.analysis import record
    from bot.slack import web_client

    async with connect(settings, "state") as conn:
        await migrate.upgrade(conn)
    analysis = await analyze(settings, top=20)
    await record(settings, analysis, "cli")
    out = Path(args.out) if args.out else settings.migrations_dir
    container = Container(settings, web_client(settings))
    post = bool(settings.slack_bot_token and settings.channel)
    try:
        created = await proposals.propose(container, "cli", analysis.id, out=out, post=post)
    except proposals.NothingToPropose:
        print("No index recommendations: nothing to propose.")
        return 0
    finally:
        await container.pools.close()
    for proposal in created:
        rec = proposal["evidence"]
        print(f"#{proposal['id']} {rec['sql']}")
        if proposal.get("file"):
            print(f"    written to {proposal['file']}")
        for finding in rec.get("lint", []):
            print(f"    squawk {finding['rule']}: {finding['message']}")
    patches = sorted({p["prisma_patch"] for p in created if p.get("prisma_patch")})
    for path in patches:
        print(f"Prisma: the @@index lines for schema.prisma written to {path}")
    if not created:
        print("Every recommendation is already proposed and waiting for a decision.")
    print("posted for approval in Slack" if post and created else
          "not posted to Slack (set SLACK_BOT_TOKEN and HOTDATA_CHANNEL to ask for approval)")
    return 0


async def _proposals(args: argparse.Namespace, settings: Settings) -> int:
    from bot.proposals import binding, store

    async with connect(settings, "state") as conn:
        await migrate.upgrade(conn)
        rows = await store.recent(conn, limit=50)
    for row in rows:
        print(f"#{row['id']} {row['status']:<10} sha256 {binding.short(row['sql_sha256'])} "
              f"{row['index_name']} on {row['table_name']}")
    if not rows:
        print("No index migrations yet: `hotdata propose` or `/hotdata propose` makes them.")
    return 0


async def _decide(args: argparse.Namespace, settings: Settings) -> int:
    """A manager's decision from a terminal: the same checks, audit and card updates as a
    click in Slack (the Slack user ID given counts as theirs; the audit log also records the
    account that ran the command)."""
    import getpass

    from bot.container import Container
    from bot.flows import approvals
    from bot.proposals import store
    from bot.slack import web_client

    async with connect(settings, "state") as conn:
        await migrate.upgrade(conn)
        await store.audit(conn, args.user, "command line", args.id, None, args.command,
                          {"account": getpass.getuser()})
    container = Container(settings, web_client(settings))
    try:
        if args.command == "approve":
            answer = await approvals.approve(container, args.id, args.user, args.sha256.lower())
        else:
            answer = await approvals.reject(container, args.id, args.user, args.reason)
        async with container.pools.connection("state") as conn:
            proposal = await store.get(conn, args.id)
            counted = proposal is not None and (
                proposal["decided_by"] == args.user
                or args.user in await store.approvers(conn, proposal))
    finally:
        await container.pools.close()
    print(answer)
    if proposal is not None:
        result = proposal.get("result") or {}
        why = result.get("error") or result.get("note") or result.get("asked_again")
        print(f"#{args.id} is now {proposal['status']}" + (f": {why}" if why else ""))
    return 0 if counted and proposal is not None and proposal["status"] != "failed" else 1


async def _drill(args: argparse.Namespace, settings: Settings) -> int:
    from bot.drills import runner
    from bot.flows import drills
    from bot.render import drill as render

    async with connect(settings, "state") as conn:
        await migrate.upgrade(conn)
    try:
        if args.runbook:
            print(await drills.update_runbook(settings, Path(args.runbook)))
            return 0
        if args.history is not None:
            found = await drills.history(settings, max(1, args.history))
            print(render.history_json(found) if args.format == "json"
                  else render.history_markdown(found), end="")
            return 0
        result = await runner.run(settings, scratch_dsn=args.scratch_dsn, requested_by="cli")
    except runner.DrillRefused as refused:
        print(f"hotdata: {refused}", file=sys.stderr)
        return 2
    _show(args.format, result, render)
    return 0 if result.status == "passed" else 1


async def _report(args: argparse.Namespace, settings: Settings) -> int:
    from bot.container import Container
    from bot.flows import drills, reports
    from bot.render import report as render
    from bot.reports.report import build
    from bot.slack import web_client

    async with connect(settings, "state") as conn:
        await migrate.upgrade(conn)
    report = await build(settings, reports.window(settings))
    history = await drills.history(settings)
    if args.format == "json":
        print(json.dumps({"headline": render.headline(report),
                          "blocks": render.blocks(report, history),
                          "queries_to_target": report.queries_to_target}, default=str, indent=2))
    elif args.format == "markdown":
        print(render.markdown(report, history))
    else:
        from rich.console import Console

        Console().print(render.markdown(report, history))
    if args.post:
        if not settings.channel or not settings.slack_bot_token:
            print("hotdata: --post needs SLACK_BOT_TOKEN and HOTDATA_CHANNEL", file=sys.stderr)
            return 2
        await reports.publish(Container(settings, web_client(settings)), report,
                              settings.channel, history)
    return 0


async def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from bot.server import serve

    await serve(settings, host=args.host)
    return 0


async def _db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    async with connect(settings, "state") as conn:
        applied = await migrate.upgrade(conn)
        current = await migrate.version(conn)
    if applied:
        print(f"applied {len(applied)} migration(s): {', '.join(applied)}; now at {current}")
    else:
        print(f"state schema is up to date (version {current})")
    return 0


async def _doctor(args: argparse.Namespace, settings: Settings) -> int:
    from bot import checks
    from bot.render import status as render
    from bot.slack import web_client  # aiohttp and the Slack SDK: only when Slack is involved

    client = web_client(settings) if settings.slack_bot_token else None
    found = await checks.run_all(settings, client)
    _show(args.format, found, render)
    return 0 if all(c.ok for c in found) else 1




def main(argv: list[str] | None = None) -> int:
    # What is imported by now lives as long as the process: no garbage collection needs to walk
    # it again, during the command or in the interpreter's final collections (together a tenth
    # of a second of a short command).
    gc.freeze()
    try:
        return _run(argv)
    finally:
        gc.freeze()  # nor what the command left, as the process ends with it


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.run is _demo or getattr(args, "demo", False):  # the demo brings its database
        from bot import pgcluster

        try:
            return asyncio.run(_demo(args, None))
        except ConfigError as error:
            print(f"hotdata: configuration error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("hotdata: interrupted; everything the demo started was removed",
                  file=sys.stderr)
            return 130
        except (pgcluster.ClusterError, TimeoutError) as error:
            print(f"hotdata: the demo stopped: {error}", file=sys.stderr)
            return 1
    overrides = {"database_url": args.dsn} if getattr(args, "dsn", None) else {}
    try:
        settings = load_settings(**overrides)
        if args.command == "serve":
            settings.require_for_serve()
        code: int = asyncio.run(args.run(args, settings))
        return code
    except ConfigError as error:
        print(f"hotdata: configuration error: {error}", file=sys.stderr)
        return 2
    except (BadRequest, WatchedQueriesError) as error:
        print(f"hotdata: {error}", file=sys.stderr)
        return 2
    except (DatabaseUnavailable, MigrationError) as error:
        print(f"hotdata: {error}", file=sys.stderr)
        return 1
    except psycopg.Error as error:  # e.g. a role lacking a privilege: say which, no traceback
        print(f"hotdata: {scrub(' '.join(str(error).split()), settings.secrets())}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
