"""Calendar dates written in text, read into ISO form (YYYY-MM-DD), for `arq.date_in`.

Forms read (English month names, full or three letters, any case):

- year first: 2021-03-04, 2021/03/04, 2021.3.4;
- year last: 04/03/2021, 4.3.2021, 04-03-2021 (day or month first: see `day_first`);
- with a month name: March 4, 2021 / Mar 4 2021 / 4 March 2021 / 4th of March, 2021.

A form that names no real day (2021-02-30) is not a date. Two-digit years are not read:
which century they mean is a guess.
"""

from __future__ import annotations

import re
from datetime import date

__all__ = ["dates_in"]

_MONTH_NAMES = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip
_MONTHS = {name: n for n, full in enumerate(_MONTH_NAMES, start=1) for name in (full, full[:3])}
_MONTH = r"(?P<month_name>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>\d{4})"
_SEP = r"(?P<sep>[-/.])"
_FORMS = [
    re.compile(rf"(?<![\d.]){_YEAR}{_SEP}(?P<a>\d{{1,2}})(?P=sep)(?P<b>\d{{1,2}})(?!\d)"),
    re.compile(rf"(?<![\d.])(?P<a>\d{{1,2}}){_SEP}(?P<b>\d{{1,2}})(?P=sep){_YEAR}(?!\d)"),
    re.compile(rf"\b{_MONTH}\s+{_DAY},?\s+{_YEAR}\b", re.IGNORECASE),
    re.compile(rf"\b{_DAY}\s+(?:of\s+)?{_MONTH},?\s+{_YEAR}\b", re.IGNORECASE),
]


def dates_in(text: str, *, day_first: bool | None = None) -> list[str]:
    """The dates written in `text`, in ISO form, each once, in order of appearance.

    A numeric date with the year last (04/03/2021) reads as day first when `day_first`,
    month first when False, and both ways when None (each way that names a real day).
    """
    found: dict[tuple[int, int], list[str]] = {}  # by place in the text, to keep its order
    for form in _FORMS:
        for match in form.finditer(text):
            found[match.span()] = [d.isoformat() for d in _readings(match, day_first)]
    ordered = (iso for _, dates in sorted(found.items()) for iso in dates)
    return list(dict.fromkeys(ordered))


def _readings(match: re.Match[str], day_first: bool | None) -> list[date]:
    parts = match.groupdict()
    year = int(parts["year"])
    if parts.get("month_name"):
        orders = [(_MONTHS[parts["month_name"].lower()], int(parts["day"]))]
    elif match.start("year") < match.start("a"):  # year first: always month, then day
        orders = [(int(parts["a"]), int(parts["b"]))]
    else:
        a, b = int(parts["a"]), int(parts["b"])
        orders = {True: [(b, a)], False: [(a, b)], None: [(a, b), (b, a)]}[day_first]
    readings = []
    for month, day in dict.fromkeys(orders):
        try:
            readings.append(date(year, month, day))
        except ValueError:
            continue  # not a real day: not a date
    return readings
