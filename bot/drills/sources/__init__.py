"""Where a drill's backup comes from: one module per back end.

- `dump`: hotdata takes the backup itself (pg_dumpall --roles-only, pg_dump -Fd -j N from an
  exported snapshot whose facts it reads in the same snapshot);
- `directory`: the newest dump a team's own backup job left in a directory;
- `pgbackrest`: the newest backup of a pgBackRest stanza, restored as a whole private cluster
  that replays the archived WAL;
- `barman`: the same from a Barman server (`barman recover`); what the two share is
  `physical`.
"""


class NoBackup(Exception):
    """There is no backup to restore where the settings say backups are."""
