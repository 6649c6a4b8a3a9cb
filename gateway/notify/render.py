"""The words of a notification, in the configured language: markdown (WeCom, DingTalk), plain text
and HTML (e-mail). The webhook carries the alert JSON itself."""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.notify.channels.base import Event, Message

_TEXT: dict[str, dict[str, str]] = {
    "zh-CN": {
        "fire_alarm": "火警", "fire_alarm_exit_blocked": "火警且安全出口堵塞", "exit_blocked": "安全出口堵塞",
        "camera_offline": "摄像头离线", "camera_stream_fault": "视频流故障", "detector_offline": "烟感离线",
        "detector_fault": "烟感故障", "agent_offline": "边缘网关离线", "notifier_failing": "通知渠道故障",
        "critical": "紧急", "major": "重要", "minor": "一般",
        "alert": "告警", "all_clear": "解除", "digest": "汇总",
        "site": "场所", "address": "地址", "device": "设备", "opened": "发生时间", "state": "状态",
        "step": "第 {n} 级通知 ({s} 秒未确认)", "first": "首次通知", "count": "次数",
        "open": "未确认", "acknowledged": "已确认", "resolved": "已解除", "by": "处理人",
        "clear_title": "【解除】{kind}: {site}", "alert_title": "【{sev}】{kind}: {site}",
        "digest_title": "【汇总】{n} 条一般告警", "link": "查看详情",
    },
    "en": {
        "fire_alarm": "Fire alarm", "fire_alarm_exit_blocked": "Fire alarm with blocked exit",
        "exit_blocked": "Exit blocked", "camera_offline": "Camera offline", "camera_stream_fault": "Stream fault",
        "detector_offline": "Detector offline", "detector_fault": "Detector fault", "agent_offline": "Agent offline",
        "notifier_failing": "Notification channel failing",
        "critical": "CRITICAL", "major": "MAJOR", "minor": "minor",
        "alert": "alert", "all_clear": "all clear", "digest": "digest",
        "site": "Site", "address": "Address", "device": "Device", "opened": "Opened", "state": "State",
        "step": "Step {n} ({s} s unacknowledged)", "first": "First notice", "count": "Count",
        "open": "unacknowledged", "acknowledged": "acknowledged", "resolved": "resolved", "by": "By",
        "clear_title": "[ALL CLEAR] {kind}: {site}", "alert_title": "[{sev}] {kind}: {site}",
        "digest_title": "[DIGEST] {n} minor alerts", "link": "Open in the console",
    },
}


def _local(value: str | None, zone: str) -> str:
    if not value:
        return "-"
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")


def render(
    event: Event, *, route: str, step: int, delivery: str, alerts: list[dict[str, Any]],
    sites: dict[str, dict[str, Any]], language: str = "zh-CN", zone: str = "Asia/Shanghai",
    after_s: float = 0.0, console_url: str | None = None,
) -> Message:
    t = _TEXT.get(language, _TEXT["zh-CN"])

    def site_name(alert: dict[str, Any]) -> str:
        site = sites.get(alert["site"]) or {}
        return str(site.get("name") or alert["site"])

    def lines(alert: dict[str, Any]) -> list[tuple[str, str]]:
        site = sites.get(alert["site"]) or {}
        place = " ".join(str(p) for p in (site.get("city"), site.get("county"), site.get("address")) if p)
        rows = [(t["site"], f"{site_name(alert)} ({alert['site']})")]
        if place:
            rows.append((t["address"], place))
        if alert.get("device"):
            rows.append((t["device"], str(alert["device"])))
        rows.append((t["opened"], _local(alert.get("opened_at"), zone)))
        rows.append((t["state"], t.get(alert["state"], alert["state"])))
        if alert.get("count", 1) > 1:
            rows.append((t["count"], str(alert["count"])))
        if alert.get("acknowledged_by"):
            rows.append((t["by"], str(alert["acknowledged_by"])))
        return rows

    if event == "digest":
        title = t["digest_title"].format(n=len(alerts))
        heading = title
        blocks = [(f"{t.get(a['kind'], a['kind'])}: {site_name(a)}", lines(a)) for a in alerts]
    else:
        alert = alerts[0]
        kind = t.get(alert["kind"], alert["kind"])
        key = "clear_title" if event == "all_clear" else "alert_title"
        title = t[key].format(kind=kind, site=site_name(alert), sev=t.get(alert["severity"], alert["severity"]))
        heading = title
        note = t["step"].format(n=step + 1, s=f"{after_s:g}") if step > 0 and event == "alert" else t["first"]
        rows = lines(alert)
        if event == "alert":
            rows.append(("", note))
        blocks = [("", rows)]
    link = None
    if console_url and event != "digest":
        link = f"{console_url.rstrip('/')}/#/alerts/{alerts[0]['id']}"

    md = [f"### {heading}"]
    text = [heading, ""]
    body = [f"<h3>{html.escape(heading)}</h3>"]
    for sub, rows in blocks:
        if sub:
            md.append(f"**{sub}**")
            text.append(sub)
            body.append(f"<h4>{html.escape(sub)}</h4>")
        md += [f"> {k}: {v}" if k else f"> {v}" for k, v in rows]
        text += [f"{k}: {v}" if k else v for k, v in rows]
        body.append("<table>" + "".join(
            f"<tr><th align=left>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows
        ) + "</table>")
        text.append("")
    if link:
        md.append(f"[{t['link']}]({link})")
        text.append(link)
        body.append(f'<p><a href="{html.escape(link)}">{html.escape(t["link"])}</a></p>')
    return Message(event=event, route=route, step=step, delivery=delivery, alerts=tuple(alerts), sites=sites,
                   title=title, markdown="\n".join(md), text="\n".join(text).rstrip() + "\n",
                   html="<html><body>" + "".join(body) + "</body></html>")
