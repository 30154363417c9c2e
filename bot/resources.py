"""Files shipped beside the code: `migrations/` and `runbooks/` (in a wheel, under bot/_data)."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"hotdata's {name}/ directory is missing from this installation")
