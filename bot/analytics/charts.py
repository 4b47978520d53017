"""The analytics page's charts: SVG rendered on the server with pygal, no script, no CDN.

Each chart is its own SVG document served from the console (`<img src=…svg>`): inside an image
a chart's stylesheet belongs to the chart, not to the page, so the page's Content-Security-Policy
(no inline script, no inline style) does not touch it, and no script in it ever runs. Labels are
in the viewer's language; numbers go through Babel.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pygal
from babel.dates import format_skeleton
from babel.numbers import format_decimal
from pygal.style import Style

from bot.analytics.report import TOP_INTENTS, Report, percentile
from bot.analytics.rollup import DayCounts
from bot.i18n.catalogue import get_catalogue

STYLE = Style(
    background="transparent",
    plot_background="#ffffff",
    foreground="#1f2933",
    foreground_strong="#1f2933",
    foreground_subtle="#7b8794",
    colors=("#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2"),
    font_family="system-ui, 'Noto Sans', 'Noto Naskh Arabic', sans-serif",
    label_font_size=11,
    major_label_font_size=11,
    legend_font_size=12,
    value_font_size=11,
    title_font_size=14,
    opacity=".85",
    opacity_hover=".95",
)
WIDTH, HEIGHT = 640, 300
CHARTS = ("messages", "fallback", "intents", "handoff_times", "sla", "satisfaction", "funnel", "effect")


def _t(key: str, lang: str, **params: Any) -> str:
    return get_catalogue().text(key, lang, **params)


def _config(lang: str, **extra: Any) -> dict[str, Any]:
    return {
        "style": STYLE, "width": WIDTH, "height": HEIGHT, "js": [], "disable_xml_declaration": False,
        "legend_at_bottom": True, "legend_at_bottom_columns": 3, "print_values": False,
        "no_data_text": _t("console_analytics_no_data", lang), "truncate_label": -1, "truncate_legend": -1,
        "value_formatter": lambda v: format_decimal(v, locale=lang) if v is not None else "",
        "show_y_guides": True, **extra,
    }


def _days(report: Report) -> list[tuple[str, DayCounts]]:
    out = []
    day = report.start
    while day <= report.end:
        out.append((day.isoformat(), report.days.get(day, DayCounts())))
        day += timedelta(days=1)
    return out


def _day_labels(report: Report, lang: str) -> tuple[list[str], list[str]]:
    days = _days(report)
    labels = [format_skeleton("MMMd", date.fromisoformat(d), locale=lang) for d, _ in days]
    step = max(1, len(labels) // 10)
    return labels, labels[::step]


def messages(report: Report, lang: str) -> str:
    chart = pygal.Line(**_config(lang, x_label_rotation=0, show_minor_x_labels=False, dots_size=2, fill=False))
    labels, major = _day_labels(report, lang)
    chart.x_labels = labels
    chart.x_labels_major = major
    days = [c for _, c in _days(report)]
    chart.add(_t("console_analytics_series_inbound", lang), [c.inbound for c in days])
    chart.add(_t("console_analytics_series_conversations", lang), [c.conversations for c in days])
    chart.add(_t("console_analytics_series_contained", lang), [c.conversations - c.handed_off for c in days])
    return str(chart.render(is_unicode=True))


def fallback(report: Report, lang: str) -> str:
    chart = pygal.Bar(**_config(lang, show_legend=False, range=(0, 100),
                                value_formatter=lambda v: f"{format_decimal(v, locale=lang)} %"))
    languages = [code for code, c in sorted(report.by_language.items()) if c.inbound]
    chart.x_labels = [_t("console_language_name", code) for code in languages]
    chart.add(_t("console_analytics_fallback_rate", lang),
              [round(100 * report.by_language[code].fallback / report.by_language[code].inbound, 1)
               for code in languages])
    return str(chart.render(is_unicode=True))


def intents(report: Report, lang: str) -> str:
    chart: Any = pygal.HorizontalBar(**_config(lang, show_legend=False))  # the stubs mistype its labels
    top = sorted(report.total.intents.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_INTENTS][::-1]
    chart.x_labels = [name for name, _ in top]
    chart.add(_t("console_analytics_series_messages", lang), [n for _, n in top])
    return str(chart.render(is_unicode=True))


def handoff_times(report: Report, lang: str) -> str:
    minutes: Callable[[int | None], float | None] = lambda s: round(s / 60, 1) if s is not None else None  # noqa: E731
    t = report.total
    chart = pygal.Bar(**_config(lang, value_formatter=lambda v: _t(
        "console_analytics_minutes", lang, n=format_decimal(v, locale=lang))))
    chart.x_labels = [_t("console_analytics_first_response", lang), _t("console_analytics_resolution", lang)]
    chart.add("p50", [minutes(percentile(t.first_response_s, 0.5)), minutes(percentile(t.resolution_s, 0.5))])
    chart.add("p90", [minutes(percentile(t.first_response_s, 0.9)), minutes(percentile(t.resolution_s, 0.9))])
    return str(chart.render(is_unicode=True))


def sla(report: Report, lang: str) -> str:
    t = report.total
    chart = pygal.Pie(**_config(lang, inner_radius=0.55))
    if t.sla_eligible:
        chart.add(_t("console_analytics_sla_met", lang), t.sla_met)
        chart.add(_t("console_analytics_sla_missed", lang), t.sla_eligible - t.sla_met)
    return str(chart.render(is_unicode=True))


def satisfaction(report: Report, lang: str) -> str:
    chart = pygal.Bar(**_config(lang, show_legend=False))
    chart.x_labels = [format_decimal(score, locale=lang) for score in range(1, 6)]
    scores = report.total.satisfaction
    if any(scores.values()):
        chart.add(_t("console_analytics_answers", lang), [scores.get(str(score), 0) for score in range(1, 6)])
    return str(chart.render(is_unicode=True))


def funnel(report: Report, lang: str) -> str:
    t = report.total
    chart = pygal.Bar(**_config(lang, show_legend=False))
    steps = [("console_analytics_planned", t.reminders_planned), ("console_analytics_sent", t.reminders_sent),
             ("console_analytics_delivered", t.reminders_delivered), ("console_analytics_read", t.reminders_read),
             ("console_analytics_on_time", report.effect.reminded_on_time)]
    chart.x_labels = [_t(key, lang) for key, _ in steps]
    if any(n for _, n in steps):
        chart.add(_t("console_analytics_reminders", lang), [n for _, n in steps])
    return str(chart.render(is_unicode=True))


def effect(report: Report, lang: str) -> str:
    """The difference in points with its 95 % interval, overall and per language (where there is enough data)."""
    chart: Any = pygal.Bar(**_config(lang, show_legend=False, value_formatter=lambda v: _t(
        "console_analytics_points", lang, n=format_decimal(v, locale=lang))))
    rows = [(_t("console_analytics_all_languages", lang), report.effect)]
    rows += [(_t("console_language_name", code), e) for code, e in sorted(report.effect_by_language.items())]
    shown = [(name, e) for name, e in rows if e.difference_pp is not None and e.ci95_pp is not None]
    chart.x_labels = [name for name, _ in shown]
    if shown:
        chart.add(_t("console_analytics_difference", lang), [
            {"value": e.difference_pp, "ci": {"low": e.ci95_pp[0], "high": e.ci95_pp[1]}}
            for _, e in shown if e.ci95_pp is not None
        ])
    return str(chart.render(is_unicode=True))


RENDERERS: dict[str, Callable[[Report, str], str]] = {
    "messages": messages, "fallback": fallback, "intents": intents, "handoff_times": handoff_times,
    "sla": sla, "satisfaction": satisfaction, "funnel": funnel, "effect": effect,
}


# pygal always writes its configuration as a <script> for its (unused) tooltips: dropped
_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>", re.S)


def render(name: str, report: Report, lang: str) -> str:
    """The SVG document of one chart, without script (KeyError for an unknown name)."""
    return _SCRIPT.sub("", RENDERERS[name](report, lang))
