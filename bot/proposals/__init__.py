"""Index migrations: proposed from recommendations, decided by managers, applied online."""
