"""`/hotdata lint`: the schema checks, to the person who asked."""

from __future__ import annotations

from bot.advisor import lint
from bot.container import Container
from bot.render import lint as render
from bot.slack import Reply


async def lint_schema(container: Container, reply: Reply) -> lint.LintReport:
    report = await lint.run(container.settings)
    await reply(render.headline(report), render.blocks(report))
    return report
