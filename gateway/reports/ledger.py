"""The ledger (工作台账): one row per site with its compliance and problem counts for a period.

Figures for the half-open period [start, end):

- compliance: :func:`gateway.compliance.verdicts.compliance_by_site` over [start, as_of), where
  ``as_of`` is the earlier of ``end`` and ``now`` (time that has not happened yet is not counted
  as offline); a period that has not begun has no compliance figures (empty cells);
- problems: those open at some time in [start, as_of): opened in the period, or opened before it
  and not rectified before ``start`` (carried over, whether rectified within the period or still
  unrectified at its end); of them *rectified* when ``rectified_at < as_of``, *unrectified*
  otherwise, and *overdue* when unrectified with ``deadline <= as_of``. Statuses are taken from
  ``opened_at``/``rectified_at`` as they are now: a problem reopened since is unrectified.

docs/reports.md describes the columns.
"""

# ruff: noqa: RUF001, RUF002 - the inspectors' texts use Chinese full-width punctuation on purpose
from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font
from openpyxl.utils import get_column_letter

from gateway.compliance.reasons import reason_text
from gateway.compliance.timeline import NOT_YET_REPORTING
from gateway.compliance.verdicts import SiteCompliance, compliance_by_site
from gateway.config import Settings
from gateway.reports.spreadsheet import guard, to_csv
from gateway.store import reports as store
from gateway.store.db import Conn

LEDGER_HEADER: tuple[str, ...] = (
    "场所编号", "场所名称", "市", "县区", "类别", "应接入摄像头", "实际接入", "在线率(最低)", "时延中位数(最大)",
    "实时接入达标", "不达标原因", "问题数", "已整改", "未整改", "逾期",
)
_LEDGER_WIDTHS = (14, 28, 10, 12, 12, 12, 10, 12, 16, 12, 48, 8, 8, 8, 8)
PERCENT_FORMAT = "0.0%"
DELAY_FORMAT = "0.00"


@dataclass(frozen=True, slots=True)
class LedgerRow:
    site: str
    name: str
    city: str
    county: str
    category: str
    cameras_required: int
    cameras_reporting: int | None  # None: no compliance figures (the period has not begun)
    online_share_min: float | None  # lowest camera online share; None without cameras or figures
    delay_p50_max_s: float | None  # highest camera median delay (s); None without delays
    compliant: bool | None  # None also for a site not reporting yet in the period (reason_codes says so)
    reasons: tuple[str, ...]  # the reasons in words, in the ledger's language (zh-CN by default)
    problems: int
    rectified: int
    unrectified: int
    overdue: int
    reason_codes: tuple[dict[str, Any], ...] = ()

    @property
    def not_reporting(self) -> bool:
        return any(c.get("code") == NOT_YET_REPORTING for c in self.reason_codes)


def as_of(end: datetime, now: datetime | None) -> datetime:
    """The instant the period's figures are taken at: ``end``, or ``now`` when that is earlier."""
    return min(end, now if now is not None else datetime.now(UTC))


def ledger_rows(
    conn: Conn,
    start: datetime,
    end: datetime,
    *,
    city: str | None = None,
    county: str | None = None,
    settings: Settings,
    now: datetime | None = None,
    lang: str = "zh-CN",
) -> list[LedgerRow]:
    """The ledger of [start, end) (aware datetimes) for the sites of ``city``/``county`` (all when None),
    sorted by city, county, site id. ``now`` (default: the clock) caps the period (module docstring)."""
    if start >= end:
        raise ValueError("the period must end after it starts")
    upto = as_of(end, now)
    # Sorted here by code point, not by the database's collation: the same order everywhere.
    sites = sorted(store.ledger_sites(conn, city=city, county=county), key=lambda s: (s["city"], s["county"], s["id"]))
    counts = {r["site"]: r for r in store.problem_counts(conn, start, upto, city=city, county=county)}
    figures: dict[str, SiteCompliance] = {}
    if upto > start and sites:
        all_figures = compliance_by_site(
            conn, start, upto, thresholds=settings.compliance, heartbeats=settings.liveness,
            site=sites[0]["id"] if len(sites) == 1 else None,
        )
        wanted = {s["id"] for s in sites}
        figures = {k: v for k, v in all_figures.items() if k in wanted}
    rows = []
    for s in sites:
        c = figures.get(s["id"])
        n = counts.get(s["id"])
        problems, rectified, overdue = (n["problems"], n["rectified"], n["overdue"]) if n else (0, 0, 0)
        shares = [cam.online_share for cam in c.cameras] if c else []
        delays = [cam.delay_p50_s for cam in c.cameras if cam.delay_p50_s is not None] if c else []
        rows.append(LedgerRow(
            site=s["id"], name=s["name"], city=s["city"], county=s["county"], category=s["category"],
            cameras_required=int(s["cameras_required"]),
            cameras_reporting=c.verdict.cameras_reporting if c else None,
            online_share_min=min(shares) if shares else None,
            delay_p50_max_s=max(delays) if delays else None,
            compliant=c.verdict.compliant if c else None,
            reasons=tuple(reason_text(code, lang) for code in c.verdict.codes) if c else (),
            reason_codes=tuple(dict(code) for code in c.verdict.codes) if c else (),
            problems=problems, rectified=rectified, unrectified=problems - rectified, overdue=overdue,
        ))
    return rows


# --- output -------------------------------------------------------------------------------------


def yes_no(value: bool | None) -> str:
    return "" if value is None else ("是" if value else "否")


def verdict_cell(r: LedgerRow) -> str:
    """是 / 否, 未接入 for a site not reporting yet, empty without figures."""
    return "未接入" if r.not_reporting else yes_no(r.compliant)


def percent_text(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.1f}%"


def delay_text(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _text_cells(r: LedgerRow) -> list[str]:
    return [
        guard(r.site), guard(r.name), guard(r.city), guard(r.county), guard(r.category), str(r.cameras_required),
        "" if r.cameras_reporting is None else str(r.cameras_reporting), percent_text(r.online_share_min),
        delay_text(r.delay_p50_max_s), verdict_cell(r), guard("；".join(r.reasons)), str(r.problems),
        str(r.rectified), str(r.unrectified), str(r.overdue),
    ]


def ledger_csv(rows: Iterable[LedgerRow]) -> bytes:
    """The ledger as CSV: :data:`LEDGER_HEADER`, then one row per site; percentages as ``99.5%``,
    delays in seconds with two decimals, empty cells where there is no figure."""
    return to_csv(LEDGER_HEADER, (_text_cells(r) for r in rows))


def to_xlsx(
    title: str,
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    widths: Sequence[int],
    formats: dict[int, str],
    freeze: str,
    sheet_name: str | None = None,
) -> bytes:
    """One sheet: the title in A1 (bold), the header in row 2 (bold, frozen above ``freeze``), then
    ``rows`` from row 3; ``formats`` maps a 0-based column to its number format."""
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = sheet_title(sheet_name or title)  # A1 has the whole title; a sheet name is short
    sheet.append([guard(title)])
    sheet["A1"].font = Font(bold=True, size=14)
    sheet.append(list(header))
    for cell in sheet[2]:
        cell.font = Font(bold=True)
        cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
    for row in rows:
        sheet.append(list(row))
        for index, fmt in formats.items():
            sheet.cell(row=sheet.max_row, column=index + 1).number_format = fmt
    for index, width in enumerate(widths, start=1):
        sheet.column_dimensions[get_column_letter(index)].width = width
    sheet.freeze_panes = freeze
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def sheet_title(title: str) -> str:
    """A valid sheet name: at most 31 characters, none of ``[]:*?/\\`` (a time's colon becomes the
    full-width one, which Excel allows: ``08：00``)."""
    cleaned = "".join("：" if ch == ":" else "_" if ch in "[]*?/\\" else ch for ch in title).strip("'") or "Sheet1"
    return cleaned[:31]


def _xlsx_cells(r: LedgerRow) -> list[Any]:
    return [
        guard(r.site), guard(r.name), guard(r.city), guard(r.county), guard(r.category), r.cameras_required,
        r.cameras_reporting, r.online_share_min, r.delay_p50_max_s, verdict_cell(r) or None,
        guard("；".join(r.reasons)) or None, r.problems, r.rectified, r.unrectified, r.overdue,
    ]


def ledger_xlsx(rows: Iterable[LedgerRow], *, title: str, sheet_name: str | None = None) -> bytes:
    """The ledger as XLSX: ``title`` in A1, :data:`LEDGER_HEADER` in row 2 (bold), one row per site from
    row 3, frozen below the header and right of the site's name; numbers as numbers, online share
    formatted ``0.0%``, delay in seconds ``0.00``, empty cells where there is no figure."""
    return to_xlsx(title, LEDGER_HEADER, (_xlsx_cells(r) for r in rows), widths=_LEDGER_WIDTHS,
                   formats={7: PERCENT_FORMAT, 8: DELAY_FORMAT}, freeze="C3", sheet_name=sheet_name)
