"""Prisma schemas kept in sync: the @@index line of each proposal in the model that maps its
table (through @@map and @map), and a patch for schema.prisma that `git apply` takes."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from bot.proposals import prisma

SCHEMA = """\
datasource db {
  provider = "postgresql"
  url      = env("DATABASE_URL")
}

// the application's notifications
model Notification {
  id        BigInt   @id @default(autoincrement())
  userId    String   @map("user_id") @db.Uuid // who it is for
  createdAt DateTime @default(now()) @map(name: "created_at")
  read      Boolean  @default(false)
  kind      String
  author    User?    @relation(fields: [userId], references: [id])

  @@map("notifications")
}

model DecisionLog {
  id        BigInt   @id
  userId    String   @map("user_id") @db.Uuid
  status    String
  createdAt DateTime @map("created_at")

  @@index([status])
  @@map("decision_log")
  @@schema("audit")
}

model User {
  id            String         @id @db.Uuid
  notifications Notification[]
}
"""


def rec(table: str, index: str, columns: list[str], **extra: Any) -> Any:
    return {"action": "create", "table": table, "index": index, "columns": columns,
            "where": None, "include": [], **extra}


def test_models_map_tables_and_columns() -> None:
    found = {m.name: m for m in prisma.models(SCHEMA)}
    assert set(found) == {"Notification", "DecisionLog", "User"}
    notification = found["Notification"]
    assert (notification.table, notification.schema) == ("notifications", None)
    assert notification.fields["user_id"] == "userId"
    assert notification.fields["created_at"] == "createdAt"
    assert notification.fields["read"] == "read"
    assert found["DecisionLog"].schema == "audit"
    assert found["User"].table == "User"
    assert prisma.model_for(list(found.values()), "audit.decision_log").name == "DecisionLog"
    assert prisma.model_for(list(found.values()), "public.notifications").name == "Notification"
    with pytest.raises(prisma.PrismaError, match=r"no model for public\.decision_log"):
        prisma.model_for(list(found.values()), "public.decision_log")  # it is in `audit`


def test_the_index_line_names_fields_sort_and_map_and_says_what_prisma_cannot() -> None:
    [notification] = [m for m in prisma.models(SCHEMA) if m.name == "Notification"]
    line, note = prisma.index_line(notification, rec(
        "public.notifications", "idx_n_user_created", ["user_id", "created_at DESC"]))
    assert line == '@@index([userId, createdAt(sort: Desc)], map: "idx_n_user_created")'
    assert note is None
    _, note = prisma.index_line(notification, rec(
        "public.notifications", "idx_unread", ["user_id"], where="NOT read",
        include=["kind"]))
    assert note is not None and "WHERE NOT read" in note and "INCLUDE columns (kind)" in note
    with pytest.raises(prisma.PrismaError, match="no field for column body"):
        prisma.index_line(notification, rec("public.notifications", "i", ["body"]))


def test_the_patch_adds_each_line_inside_its_model_and_git_applies_it(tmp_path: Path) -> None:
    lines = {"Notification": ['@@index([userId], map: "idx_a")'],
             "DecisionLog": ['@@index([userId, status], map: "idx_b")',
                             "@@index([status])"]}  # already there: not added twice
    patched = prisma.patched(SCHEMA, lines)
    blocks = {m.name: m for m in prisma.models(patched)}
    text = patched.splitlines()
    assert text[blocks["Notification"].end - 1] == '  @@index([userId], map: "idx_a")'
    assert text[blocks["DecisionLog"].end - 1] == '  @@index([userId, status], map: "idx_b")'
    assert patched.count("@@index([status])") == 1
    (tmp_path / "schema.prisma").write_text(SCHEMA)
    (tmp_path / "schema.prisma.patch").write_text(prisma.patch(SCHEMA, lines))
    subprocess.run(["git", "apply", "schema.prisma.patch"], cwd=tmp_path, check=True)
    assert (tmp_path / "schema.prisma").read_text() == patched
