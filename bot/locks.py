"""PostgreSQL advisory lock keys, one per kind of exclusive work (two-int form: class, object)."""

LOCK_CLASS = 0x68_6F_74_64  # "hotd"

MIGRATE = (LOCK_CLASS, 1)
LEADER = (LOCK_CLASS, 2)
DRILL = (LOCK_CLASS, 3)
APPLY_CLASS = LOCK_CLASS + 1  # the object is a proposal id
REVIEW_CLASS = LOCK_CLASS + 2  # the object is a review sandbox id


def applying(proposal_id: int) -> tuple[int, int]:
    """Held (session lock on a state connection) by the process applying a proposal, for as
    long as it applies it: a replica starting meanwhile must not take it for a leftover."""
    return (APPLY_CLASS, proposal_id)


def reviewing(sandbox_id: int) -> tuple[int, int]:
    """Held (session lock on a state connection) by the process running a schema review in
    that sandbox: only a sandbox whose lock is free is a crash's leftover."""
    return (REVIEW_CLASS, sandbox_id)
