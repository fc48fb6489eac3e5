"""Retention periods: how long a class of records is kept (issue 23), written `30d`, `6w`,
`6m`, `5y`, or `keep` (kept for ever, as a public body may have to).

Parsed strictly: a whole number from 1 with one unit letter, nothing else (no spaces, no
upper case, no fractions, no zero), so that a typo never silently means "delete at once"
or "keep for ever". Months and years are calendar months and years: `6m` before 31 August
is 28 or 29 February (the last day of a shorter month).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

KEEP = "keep"
UNITS = {"d": "days", "w": "weeks", "m": "months", "y": "years"}
# The longest period of each unit: 200 years, so that a cut-off is always a date.
LIMITS = {"d": 73000, "w": 10400, "m": 2400, "y": 200}
_PERIOD = re.compile(r"^([1-9][0-9]{0,5})([dwmy])$")


class PeriodError(ValueError):
    """A period that is not one; the message says what is allowed."""


@dataclass(frozen=True)
class Period:
    count: int
    unit: str                     # d, w, m or y

    @property
    def text(self) -> str:
        return f"{self.count}{self.unit}"

    def before(self, now: datetime) -> datetime:
        """The cut-off: `now` minus this period (calendar months and years, clamped to the month's last day)."""
        if self.unit == "d":
            return now - timedelta(days=self.count)
        if self.unit == "w":
            return now - timedelta(weeks=self.count)
        months = self.count * (12 if self.unit == "y" else 1)
        index = now.year * 12 + (now.month - 1) - months
        year, month = divmod(index, 12)
        day = min(now.day, calendar.monthrange(year, month + 1)[1])
        return now.replace(year=year, month=month + 1, day=day)


def parse_period(text: str) -> Period | None:
    """`keep` -> None; `30d`, `6w`, `6m`, `5y` -> a Period. Raises PeriodError for anything else."""
    if not isinstance(text, str):
        raise PeriodError(f"not a period: {text!r} (use e.g. 30d, 6m, 5y, or keep)")
    if text == KEEP:
        return None
    match = _PERIOD.match(text)
    if match is None:
        raise PeriodError(f"not a period: {text[:40]!r} (a whole number from 1 and d, w, m or y, "
                          "e.g. 30d, 6m, 5y; or keep)")
    count, unit = int(match.group(1)), match.group(2)
    if count > LIMITS[unit]:
        raise PeriodError(f"{text!r} is too long (at most {LIMITS[unit]}{unit}); use keep to keep for ever")
    return Period(count, unit)
