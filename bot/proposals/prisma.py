"""Prisma schemas kept in sync: for a proposal, the `@@index([...])` line of the model that maps
its table, so that `prisma migrate dev` sees the index hotdata built in the schema and does
not drop it as drift; and a patch adding those lines to `schema.prisma`.

Only what that needs is read from the schema: each `model` block's name, its table (`@@map`,
else the model's name), its PostgreSQL schema (`@@schema`, multiSchema), and its fields'
columns (`@map`, else the field's name). Prisma's own grammar is not needed for that, and its
engines are not available offline.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from bot.advisor.model import Recommendation

MODEL = re.compile(r"^\s*model\s+(\w+)\s*\{")
END = re.compile(r"^\s*\}")
FIELD = re.compile(r"^\s*(\w+)\s+[\w.]+(\[\])?\??(\s|$)")
MAP = re.compile(r'@map\(\s*(?:name:\s*)?"([^"]+)"')
TABLE_MAP = re.compile(r'^\s*@@map\(\s*(?:name:\s*)?"([^"]+)"')
SCHEMA = re.compile(r'^\s*@@schema\(\s*"([^"]+)"')


class PrismaError(ValueError):
    """The schema has no model for the table, or the model lacks a column of the index."""


@dataclass
class Model:
    name: str
    table: str  # @@map, else the model's name
    schema: str | None  # @@schema (multiSchema); None: the datasource's default schema
    fields: dict[str, str] = field(default_factory=dict)  # column → field name
    end: int = 0  # index of the line holding the block's closing brace


def models(text: str) -> list[Model]:
    """The `model` blocks of a schema.prisma."""
    found: list[Model] = []
    current: Model | None = None
    for number, raw in enumerate(text.splitlines()):
        line = raw.split("//", 1)[0]
        if current is None:
            start = MODEL.match(line)
            if start:
                current = Model(start[1], start[1], None)
            continue
        if END.match(line):
            current.end = number
            found.append(current)
            current = None
        elif table := TABLE_MAP.match(line):
            current.table = table[1]
        elif schema := SCHEMA.match(line):
            current.schema = schema[1]
        elif not line.strip().startswith("@@") and (name := FIELD.match(line)):
            mapped = MAP.search(line)
            current.fields[mapped[1] if mapped else name[1]] = name[1]
    return found


def model_for(found: list[Model], table: str) -> Model:
    """The model mapping `schema.table` (a model without @@schema maps the default one)."""
    schema, name = table.split(".", 1)
    for model in found:
        if model.table == name and model.schema in (schema, None):
            return model
    raise PrismaError(f"schema.prisma has no model for {table} (@@map(\"{name}\"))")


def index_line(model: Model, rec: Recommendation) -> tuple[str, str | None]:
    """The `@@index` line for `rec` in `model`, and a note on what Prisma cannot express."""
    keys = []
    for column in rec["columns"]:
        name = column.removesuffix(" DESC")
        if name not in model.fields:
            raise PrismaError(f"model {model.name} has no field for column {name}")
        keys.append(model.fields[name] + ("(sort: Desc)" if column.endswith(" DESC") else ""))
    line = f'@@index([{", ".join(keys)}], map: "{rec["index"]}")'
    missing = [what for what, present in (
        (f"its predicate (WHERE {rec.get('where')})", rec.get("where")),
        (f"its INCLUDE columns ({', '.join(rec.get('include') or [])})", rec.get("include")))
        if present]
    note = (f"Prisma cannot express {' or '.join(missing)}: the line keeps the index's name and "
            "keys, so prisma migrate keeps the index; edit the SQL of a migration Prisma "
            "generates for it by hand" if missing else None)
    return line, note


def patched(text: str, lines: dict[str, list[str]]) -> str:
    """`text` with each model's new lines (model name → lines) before its closing brace,
    indented as its other lines; lines already there are not added twice."""
    found = {m.name: m for m in models(text)}
    out = text.splitlines()
    for name in sorted(lines, key=lambda n: -found[n].end):  # bottom up: line numbers hold
        model = found[name]
        fresh = [line for line in lines[name] if line not in text]
        out[model.end:model.end] = [f"  {line}" for line in fresh]
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def patch(text: str, lines: dict[str, list[str]], path: str = "schema.prisma") -> str:
    """A unified diff adding `lines` to the schema (`git apply` / `patch -p1` it)."""
    return "".join(difflib.unified_diff(
        text.splitlines(keepends=True), patched(text, lines).splitlines(keepends=True),
        f"a/{path}", f"b/{path}"))
