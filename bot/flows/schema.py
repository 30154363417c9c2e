"""Schemas for a person: `/hotdata schema` (the ERD uploaded, a summary in reply), and a schema
plan reviewed in the channel the command came from (the modal, then the verdict with the spec
in its thread) or from the command line (the migration stubs and the spec written to a
directory)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.container import Container
from bot.render import schema as render
from bot.schema import document
from bot.schema.review import Review, review, stubs
from bot.settings import Settings
from bot.slack import Reply


async def document_in_channel(container: Container, reply: Reply, channel: str,
                              schema: str) -> document.SchemaDoc:
    """The schema's ERD as a PNG in the channel, its summary to the person who asked."""
    doc = await document.run(container.settings, schema)
    if doc.tables:
        await container.pacer.wait(channel)
        await container.client.files_upload_v2(
            channel=channel, file=await document.png(doc.schema, doc.tables),
            filename=f"hotdata-erd-{doc.schema}.png", title=f"ERD of schema {doc.schema}")
    await reply(render.headline(doc), render.blocks(doc))
    return doc


async def open_review(container: Container, trigger_id: str, channel: str) -> None:
    """The modal a plan is pasted into; its submission names `channel`."""
    await container.client.views_open(trigger_id=trigger_id, view=render.review_modal(channel))


async def review_plan(settings: Settings, plan_text: str, *, name: str = "plan",
                      out: Path | None = None,
                      at: datetime | None = None) -> Review:
    """`hotdata schema review PLAN.sql [--out DIR]`: the review, and its files when it
    passed and `out` is given."""
    result = await review(settings, plan_text, name=name)
    if out is not None and result.status == "ok":
        result.files = [str(p) for p in write(out, result, at or datetime.now(UTC))]
    return result


def write(directory: Path, review: Review, at: datetime) -> list[Path]:
    """Supabase-named migration stubs, one per new table a second apart, and the spec."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for n, (name, text) in enumerate(stubs(review)):
        stamp = (at.astimezone(UTC) + timedelta(seconds=n)).strftime("%Y%m%d%H%M%S")
        path = directory / f"{stamp}_{name}.sql"
        path.write_text(text)
        written.append(path)
    path = directory / f"database-schema-{review.plan}.md"
    path.write_text(render.spec(review))
    written.append(path)
    return written


async def review_in_channel(container: Container, channel: str, user: str,
                            plan_text: str) -> Review:
    """`/hotdata schema review`: review a pasted plan, post the verdict and the spec."""
    result = await review(container.settings, plan_text, name="slack-plan", requested_by=user)
    verdict = {"ok": "reviewed", "refused": "refused", "failed": "failed to apply"}.get(
        result.status, result.status)
    text = (f"<@{user}>'s schema plan {verdict}: {len(result.findings)} finding(s)"
            + (f" — {result.error}" if result.error else ""))
    posted = await container.client.chat_postMessage(channel=channel, text=text[:3000])
    await container.client.files_upload_v2(
        channel=channel, thread_ts=posted["ts"], filename="database-schema-slack-plan.md",
        title="Schema plan review", content=render.review_markdown(result))
    return result
