"""Calendar arithmetic the engine needs at every start, without importing dateutil."""

from __future__ import annotations

import calendar
from datetime import date


def add_months(day: date, months: int) -> date:
    """`day + relativedelta(months=months)` (a test holds them equal): the same day of the
    month `months` later (or earlier), or that month's last day if it is shorter."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    return day.replace(year=year, month=month, day=min(day.day, calendar.monthrange(year, month)[1]))
