"""Restore drills: restore a backup into a scratch database, verify it, measure RTO and RPO."""
