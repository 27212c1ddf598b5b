"""Schedules: five-field cron (CronJob's dialect) and ``@every <duration>`` (pure).

Fields: minute hour day-of-month month day-of-week, each ``*``, a number, a range
``a-b``, a step ``*/n`` or ``a-b/n``, a list of those, and names for months (jan…) and
weekdays (sun…, 0 and 7 are Sunday). When both day fields are restricted, a day matching
either is a match (as cron does). Macros: @yearly @annually @monthly @weekly @daily
@midnight @hourly. Times are evaluated in the schedule's time zone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
          "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
          "@hourly": "0 * * * *"}  # fmt: skip
MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    )
}
DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
          ("month", 1, 12, MONTHS), ("day of week", 0, 7, DAYS))  # fmt: skip
DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
MIN_EVERY = timedelta(seconds=5)


class ScheduleError(ValueError):
    """A schedule that cannot be used: what is wrong and where."""


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool  # day of month is *
    any_weekday: bool  # day of week is *
    tz: ZoneInfo

    def day_matches(self, d: datetime) -> bool:
        dom = d.day in self.days
        dow = (d.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow

    def next_after(self, after: datetime) -> datetime:
        """The first matching minute strictly after ``after`` (aware, returned in UTC)."""
        t = after.astimezone(self.tz).replace(second=0, microsecond=0, tzinfo=None) + timedelta(
            minutes=1
        )
        for _ in range(
            100_000
        ):  # enough for any valid schedule (Feb 29 on a Monday: ~28 years of jumps)
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
                continue
            if not self.day_matches(t):
                t = t.replace(hour=0, minute=0) + timedelta(days=1)
                continue
            if t.hour not in self.hours:
                t = t.replace(minute=0) + timedelta(hours=1)
                continue
            if t.minute not in self.minutes:
                t += timedelta(minutes=1)
                continue
            return t.replace(tzinfo=self.tz).astimezone(UTC)
        raise ScheduleError("the schedule never fires")


@dataclass(frozen=True)
class Every:
    period: timedelta

    def next_after(self, after: datetime, anchor: datetime) -> datetime:
        """The first ``anchor + k * period`` strictly after ``after``."""
        if after < anchor:
            return anchor
        k = int((after - anchor) / self.period) + 1
        return anchor + k * self.period


def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"spec.timeZone: unknown time zone {name!r} (an IANA name: Europe/Sofia)"
        ) from None


def parse(schedule: str, tz: str | None = None) -> Cron | Every:
    text = " ".join(schedule.split())
    if text.startswith("@every "):
        m = DURATION.match(text.removeprefix("@every ").strip())
        if not m or not any(m.groups()):
            raise ScheduleError(
                f"spec.schedule: {schedule!r}: @every takes a duration like 30s, 5m or 1h30m"
            )
        h, mi, s = (int(g or 0) for g in m.groups())
        period = timedelta(hours=h, minutes=mi, seconds=s)
        if period < MIN_EVERY:
            raise ScheduleError(f"spec.schedule: {schedule!r}: at least every {MIN_EVERY.seconds}s")
        return Every(period)
    text = MACROS.get(text.lower(), text)
    parts = text.split(" ")
    if len(parts) != 5:
        raise ScheduleError(f"spec.schedule: {schedule!r} has {len(parts)} fields; cron has 5 "
                            "(minute hour day-of-month month day-of-week) or @every <duration>")  # fmt: skip
    sets = [field(p, *spec) for p, spec in zip(parts, FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in sets[4])
    return Cron(
        sets[0], sets[1], sets[2], sets[3], weekdays, parts[2] == "*", parts[4] == "*", zone(tz)
    )


def field(text: str, name: str, lo: int, hi: int, names: dict[str, int]) -> frozenset[int]:
    out: set[int] = set()
    for item in text.lower().split(","):
        rng, _, step_text = item.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if rng == "*":
                a, b = lo, hi
            elif "-" in rng:
                x, y = rng.split("-", 1)
                a, b = value(x, names), value(y, names)
            else:
                a = value(rng, names)
                b = hi if step_text else a
        except ValueError:
            raise ScheduleError(
                f"spec.schedule: {name} {item!r} is not a number, range or step"
            ) from None
        if step < 1 or not (lo <= a <= hi and lo <= b <= hi) or a > b:
            raise ScheduleError(f"spec.schedule: {name} {item!r} is outside {lo}-{hi}")
        out.update(range(a, b + 1, step))
    return frozenset(out)


def value(text: str, names: dict[str, int]) -> int:
    return names[text] if text in names else int(text)
