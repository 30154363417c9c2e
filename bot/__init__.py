"""hotdata: a Slack ChatOps bot for PostgreSQL."""
