"""Compliance reasons (``Verdict.codes``) and durations in words, in Chinese (the default) or English.

The console has the same texts in dashboards/web/i18n.js (``reason.*``); the ledger and the summary
use these. A code this module does not know is shown as its code, never dropped.
"""

# ruff: noqa: RUF001 - the inspectors' texts use Chinese full-width punctuation on purpose
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

LANGS = ("zh-CN", "en")

_TEXTS: dict[str, dict[str, str]] = {
    "zh-CN": {
        "camera_online_below": "摄像头 {device} 在线率 {pct} %，低于 {limit_pct} %",
        "camera_delay_above": "摄像头 {device} 时延中位数 {delay_s} 秒，超过 {limit_s} 秒",
        "cameras_missing": "应接入摄像头 {required} 路，实际上报 {reporting} 路",
        "not_yet_reporting": "尚未接入（期间内场所未登记或网关未上线）",
    },
    "en": {
        "camera_online_below": "camera {device} online {pct} %, below {limit_pct} %",
        "camera_delay_above": "camera {device} median delay {delay_s} s, above {limit_s} s",
        "cameras_missing": "{reporting} of {required} required cameras reporting",
        "not_yet_reporting": "not yet reporting (the site was not registered or its agent not online yet)",
    },
}


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}" if abs(value) >= 1e-4 or value == 0 else repr(value)
    return str(value)


def reason_text(reason: Mapping[str, Any], lang: str = "zh-CN") -> str:
    texts = _TEXTS.get(lang, _TEXTS["zh-CN"])
    template = texts.get(str(reason.get("code")))
    if template is None:
        return str(reason.get("code"))
    params = {k: _number(v) for k, v in reason.items()}
    try:
        return template.format(**params)
    except KeyError:  # a parameter missing: still say which reason
        return str(reason.get("code"))


def reasons_text(reasons: Iterable[Mapping[str, Any]], lang: str = "zh-CN") -> str:
    return ("；" if lang == "zh-CN" else "; ").join(reason_text(r, lang) for r in reasons)


def duration_text(seconds: float | None, lang: str = "zh-CN") -> str:
    """``23 小时 35 分`` / ``23 h 35 min``: days, hours and minutes; under a minute in seconds."""
    if seconds is None:
        return ""
    total = round(seconds)
    zh = lang == "zh-CN"
    if total < 60:
        return f"{total} 秒" if zh else f"{total} s"
    days, rest = divmod(total // 60, 24 * 60)
    hours, minutes = divmod(rest, 60)
    units = ("天", "小时", "分") if zh else ("d", "h", "min")
    parts = [f"{n} {u}" for n, u in zip((days, hours, minutes), units, strict=True) if n]
    return " ".join(parts)
