"""Schema documentation (ERD, keys, indexes, RLS in plain words, grants, lints) and plan review."""
