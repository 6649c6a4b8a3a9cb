"""What every CSV the inspectors open in Excel needs: a BOM, CRLF, and no cell read as a formula;
and periods in words for titles and sheet names."""



from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

# A cell starting with one of these is a formula to Excel (CSV injection): prefix an apostrophe.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def guard(text: str) -> str:
    """Text cells that Excel would read as a formula get a leading apostrophe."""
    return "'" + text if text.startswith(FORMULA_START) else text


def to_csv(header: Sequence[str], rows: Iterable[Sequence[str]]) -> bytes:
    """CSV in UTF-8 with a BOM (so Excel reads the Chinese), CRLF line ends."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8-sig")


def _local_text(value: datetime, lang: str) -> str:
    day = f"{value.year}年{value.month}月{value.day}日" if lang == "zh-CN" else f"{value.day} {value:%b} {value.year}"
    return day if value.time() == time.min else f"{day} {value:%H:%M}"


def period_text(start: datetime, end: datetime, zone: str = "Asia/Shanghai", lang: str = "zh-CN") -> str:
    """[start, end) as people say it, in local time: ``2026年11月1日至2026年11月30日`` when both are local
    midnights (the last day is the day before ``end``), else with the times (``end`` exclusive)."""
    tz = ZoneInfo(zone)
    first, stop = start.astimezone(tz), end.astimezone(tz)
    whole_days = first.time() == time.min and stop.time() == time.min
    last = stop - timedelta(days=1) if whole_days else stop
    if whole_days and last.date() == first.date():
        return _local_text(first, lang)
    joint = "至" if lang == "zh-CN" else " to "
    return f"{_local_text(first, lang)}{joint}{_local_text(last, lang)}"
