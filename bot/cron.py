"""Cron arithmetic: crontab expressions as APScheduler triggers, and the fire times around a
moment (the scheduler's slots, a report's window, `/hotdata status`'s next runs)."""

from __future__ import annotations

from datetime import datetime, timedelta

from apscheduler.triggers.cron import CronTrigger

WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _weekday(field: str) -> str:
    """crontab numbers weekdays from Sunday = 0 (or 7); APScheduler from Monday = 0: use names."""
    def name(token: str) -> str:
        return WEEKDAYS[int(token)] if token.isdigit() and int(token) <= 7 else token

    parts = []
    for item in field.split(","):
        base, _, step = item.partition("/")
        base = "-".join(name(t) for t in base.split("-"))
        parts.append(f"{base}/{step}" if step else base)
    return ",".join(parts)


def cron_trigger(expression: str) -> CronTrigger:
    """A crontab expression: five fields, or six with seconds first (for tests and demos)."""
    fields = expression.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ValueError(f"expected 5 crontab fields (or 6 with seconds), got {len(fields)}")
    second, minute, hour, day, month, weekday = fields
    return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month,
                       day_of_week=_weekday(weekday), timezone="UTC")


def latest_fire(trigger: CronTrigger, now: datetime) -> datetime | None:
    """The trigger's most recent fire time at or before `now` (within about a year).

    A longer lookback is tried only when the shorter one found nothing, so frequent triggers
    stay cheap and weekly or monthly ones are still found."""
    for lookback in (timedelta(hours=1), timedelta(days=3), timedelta(days=35),
                     timedelta(days=400)):
        moment: datetime | None = trigger.get_next_fire_time(None, now - lookback)
        found: datetime | None = None
        while moment is not None and moment <= now:
            found = moment
            moment = trigger.get_next_fire_time(moment, moment + timedelta(microseconds=1))
        if found is not None:
            return found
    return None


MAX_MISSED = 100  # slots listed after a long outage; older ones are summed up by the gap


def passed_slots(trigger: CronTrigger, after: datetime, now: datetime) -> list[datetime]:
    """Fire times after `after` up to `now`, oldest first (the newest MAX_MISSED)."""
    slots: list[datetime] = []
    moment = trigger.get_next_fire_time(None, after + timedelta(microseconds=1))
    while moment is not None and moment <= now:
        slots.append(moment)
        slots = slots[-MAX_MISSED:]
        moment = trigger.get_next_fire_time(moment, moment + timedelta(microseconds=1))
    return slots


def in_window(trigger: CronTrigger, now: datetime) -> bool:
    """Whether the minute of `now` is one the expression names (an apply window's minute)."""
    minute = now.replace(second=0, microsecond=0)
    return bool(trigger.get_next_fire_time(None, minute) == minute)


def next_fire(trigger: CronTrigger, now: datetime) -> datetime | None:
    moment: datetime | None = trigger.get_next_fire_time(None, now)
    return moment


def period(trigger: CronTrigger, now: datetime) -> timedelta:
    """The length of the slot that ends at the latest fire time (the report's window)."""
    last = latest_fire(trigger, now) or now
    before = latest_fire(trigger, last - timedelta(microseconds=1))
    return last - before if before else timedelta(hours=2)
