"""PostgreSQL advisory lock keys, one per kind of exclusive work (two-int form: class, object)."""

LOCK_CLASS = 0x68_6F_74_64  # "hotd"

MIGRATE = (LOCK_CLASS, 1)
LEADER = (LOCK_CLASS, 2)
DRILL = (LOCK_CLASS, 3)
