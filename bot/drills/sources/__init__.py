"""Where a drill's backup comes from: one module per back end, one function each.

- `dump`: hotdata takes the backup itself (pg_dumpall --roles-only, pg_dump -Fd -j N from an
  exported snapshot whose facts it reads in the same snapshot);
- `directory`: the newest dump a team's own backup job left in a directory.
"""
