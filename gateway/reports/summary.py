"""The city summary report for a period: per county and for the whole city, institutions,
institutions inspected, compliance and problems (issue 6 point 5).

Built on the ledger (:func:`gateway.reports.ledger.ledger_rows`), so the problem counts and the
compliance verdicts are the ledger's. *Inspected*: a site counts as inspected in the period when a
person (an inspector or an admin: the only roles that may act on problems) closed, reopened or
noted one of its problems in it, i.e. a ``problem_history`` row with ``by <> 'system'`` and
``at`` in [start, as_of). Spot-check samples are drawn on demand and not stored, so being sampled
alone does not count: a visit leaves its trace in the problem list. docs/reports.md.
"""

# ruff: noqa: RUF001 - the inspectors' texts use Chinese full-width punctuation on purpose
from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.config import Settings
from gateway.reports.ledger import (
    PERCENT_FORMAT,
    LedgerRow,
    as_of,
    ledger_rows,
    percent_text,
    to_xlsx,
    verdict_cell,
)
from gateway.reports.spreadsheet import guard, period_text, to_csv
from gateway.store import reports as store
from gateway.store.db import Conn

SUMMARY_HEADER: tuple[str, ...] = (
    "县区", "机构数", "已检查机构", "检查比例", "达标机构", "达标率", "问题数", "已整改", "未整改", "逾期",
)
TOTAL_LABEL = "合计"
_WIDTHS = (16, 10, 12, 10, 10, 10, 10, 10, 10, 10)

@dataclass(frozen=True, slots=True)
class SummaryRow:
    county: str  # TOTAL_LABEL for the city's total
    institutions: int
    inspected: int
    compliant: int
    problems: int
    rectified: int
    unrectified: int
    overdue: int

    @property
    def inspected_share(self) -> float | None:
        return self.inspected / self.institutions if self.institutions else None

    @property
    def compliance_rate(self) -> float | None:
        return self.compliant / self.institutions if self.institutions else None

    def json(self) -> dict[str, Any]:
        return {"county": self.county, "institutions": self.institutions, "inspected": self.inspected,
                "inspected_share": self.inspected_share, "compliant": self.compliant,
                "compliance_rate": self.compliance_rate, "problems": self.problems, "rectified": self.rectified,
                "unrectified": self.unrectified, "overdue": self.overdue}


@dataclass(frozen=True, slots=True)
class CitySummary:
    city: str
    start: datetime
    end: datetime
    counties: tuple[SummaryRow, ...]  # sorted by county
    total: SummaryRow
    sites: tuple[LedgerRow, ...] = ()  # the city's ledger, for the page's list of sites needing attention
    zone: str = "Asia/Shanghai"  # for the period in words

    @property
    def rows(self) -> tuple[SummaryRow, ...]:
        return (*self.counties, self.total)


def _row(county: str, sites: Sequence[LedgerRow], inspected: set[str]) -> SummaryRow:
    return SummaryRow(
        county=county,
        institutions=len(sites),
        inspected=sum(s.site in inspected for s in sites),
        compliant=sum(s.compliant is True for s in sites),
        problems=sum(s.problems for s in sites),
        rectified=sum(s.rectified for s in sites),
        unrectified=sum(s.unrectified for s in sites),
        overdue=sum(s.overdue for s in sites),
    )


def summary(
    conn: Conn, start: datetime, end: datetime, *, city: str, settings: Settings, now: datetime | None = None
) -> CitySummary:
    """The summary of ``city`` over [start, end) (aware datetimes); ``now`` as in the ledger."""
    ledger = ledger_rows(conn, start, end, city=city, settings=settings, now=now)
    inspected = store.inspected_sites(conn, start, as_of(end, now), city=city)
    by_county: dict[str, list[LedgerRow]] = {}
    for row in ledger:
        by_county.setdefault(row.county, []).append(row)
    counties = tuple(_row(county, by_county[county], inspected) for county in sorted(by_county))
    return CitySummary(city=city, start=start, end=end, counties=counties, total=_row(TOTAL_LABEL, ledger, inspected),
                       sites=tuple(ledger), zone=settings.timezone)


def attention(report: CitySummary) -> list[LedgerRow]:
    """Sites not compliant or with problems unrectified at the end of the period."""
    return [r for r in report.sites if r.compliant is False or r.unrectified]


# --- output -------------------------------------------------------------------------------------


def _cells(r: SummaryRow) -> list[Any]:
    return [guard(r.county), r.institutions, r.inspected, r.inspected_share, r.compliant, r.compliance_rate,
            r.problems, r.rectified, r.unrectified, r.overdue]


def _text_cells(r: SummaryRow) -> list[str]:
    return ["" if v is None else percent_text(v) if isinstance(v, float) else str(v) for v in _cells(r)]


def summary_csv(report: CitySummary) -> bytes:
    """CSV (UTF-8 with a BOM, CRLF): :data:`SUMMARY_HEADER`, a row per county, then the total (合计);
    shares as ``50.0%``, empty when the county has no institutions."""
    return to_csv(SUMMARY_HEADER, (_text_cells(r) for r in report.rows))


def summary_title(report: CitySummary) -> str:
    return f"{report.city} 检查情况汇总 {period_text(report.start, report.end, report.zone)}"


def summary_xlsx(report: CitySummary, *, title: str | None = None) -> bytes:
    """XLSX: the title in A1, :data:`SUMMARY_HEADER` in row 2 (bold, frozen), counties then the total;
    shares as numbers formatted ``0.0%``."""
    return to_xlsx(title or summary_title(report), SUMMARY_HEADER, (_cells(r) for r in report.rows),
                   widths=_WIDTHS, formats={3: PERCENT_FORMAT, 5: PERCENT_FORMAT}, freeze="B3",
                   sheet_name=f"汇总 {period_text(report.start, report.end, report.zone)}")


_CSS = """
body { font-family: "Noto Sans CJK SC", "Microsoft YaHei", "PingFang SC", sans-serif; margin: 2em; color: #111; }
h1 { font-size: 1.4em; margin: 0 0 .3em; }
h2 { font-size: 1.1em; margin: 1.5em 0 .5em; }
p.period { margin: 0 0 1em; color: #444; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #555; padding: .35em .6em; }
th { background: #eee; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: bold; background: #f6f6f6; }
p.note { font-size: .85em; color: #444; }
@media print {
  body { margin: 0; }
  th { background: none; }
  tr { page-break-inside: avoid; }
  thead { display: table-header-group; }
  @page { size: A4 landscape; margin: 15mm; }
}
"""


def _html_rows(rows: Iterable[SummaryRow]) -> str:
    out = []
    for r in rows:
        css = ' class="total"' if r.county == TOTAL_LABEL else ""
        cells = _text_cells(r)
        first = html.escape(r.county)
        rest = "".join(f'<td class="n">{html.escape(c)}</td>' for c in cells[1:])
        out.append(f"<tr{css}><td>{first}</td>{rest}</tr>")
    return "\n".join(out)


ATTENTION_HEADER: tuple[str, ...] = ("场所编号", "场所名称", "县区", "实时接入达标", "未整改", "逾期", "不达标原因")


def _attention_rows(rows: Iterable[LedgerRow]) -> str:
    out = []
    for r in rows:
        cells = [r.site, r.name, r.county, verdict_cell(r), str(r.unrectified), str(r.overdue),
                 "；".join(r.reasons)]
        out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return "\n".join(out) or f'<tr><td colspan="{len(ATTENTION_HEADER)}">无</td></tr>'


def summary_html(report: CitySummary) -> str:
    """A printable page (plain HTML and CSS, ``@media print``): the summary table, then the sites that
    are not compliant or have unrectified problems; every value is escaped."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in SUMMARY_HEADER)
    head2 = "".join(f"<th>{html.escape(h)}</th>" for h in ATTENTION_HEADER)
    title = html.escape(summary_title(report))
    return f"""<!DOCTYPE html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{html.escape(report.city)} 检查情况汇总</h1>
<p class="period">统计期间：{html.escape(period_text(report.start, report.end, report.zone))}</p>
<table>
<thead><tr>{head}</tr></thead>
<tbody>
{_html_rows(report.rows)}
</tbody>
</table>
<h2>需关注机构（未达标或有未整改问题）</h2>
<table>
<thead><tr>{head2}</tr></thead>
<tbody>
{_attention_rows(attention(report))}
</tbody>
</table>
<p class="note">已检查机构：期间内检查人员对该机构问题进行过整改确认、重新打开或备注。
达标率：实时接入达标机构占机构数的比例。
问题数：期间内新发现的问题及期末仍未整改的问题。</p>
</body>
</html>
"""
