"""The analytics page (`/console/analytics`, leads only): the report of a date range and language,
its definitions, its charts (SVG images, bot/analytics/charts.py) and the daily series as CSV.

Everything shown is a count; the page carries no script."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bot.analytics import charts
from bot.analytics.api import csv_response
from bot.analytics.effect import MIN_PER_ARM
from bot.analytics.report import RangeError, Report, build_report, parse_range
from bot.analytics.rollup import CONVERSATION_GAP
from bot.analytics.understanding import LOW_CONFIDENCE
from bot.runtime.settings import LANGUAGES
from bot.storage.db import utcnow
from bot.web.console.common import Ctx, LoginRequired, login_redirect, render, require_mentor, services_of
from bot.web.console.i18n import text


async def require_lead(request: Request) -> Ctx:
    """The signed-in lead (LoginRequired without a session, 403 for a mentor)."""
    ctx = await require_mentor(request)
    if ctx.mentor.role != "lead":
        raise HTTPException(403, text("console_error_leads_only", ctx.lang))
    return ctx


async def _report(request: Request, ctx: Ctx) -> Report:
    params = request.query_params
    try:
        start, end, language = parse_range(params.get("from"), params.get("to"), params.get("language"),
                                           utcnow().date())
    except RangeError:
        raise HTTPException(400, text("console_analytics_bad_range", ctx.lang)) from None
    services = services_of(request)
    report: Report = await services.analytics_reports.get(
        (start, end, language), lambda: build_report(services, start, end, language))
    return report


def _query(report: Report) -> str:
    params = {"from": report.start.isoformat(), "to": report.end.isoformat()}
    if report.language:
        params["language"] = report.language
    return urlencode(params)


async def analytics_page(request: Request) -> Response:
    try:
        ctx = await require_lead(request)
    except LoginRequired:
        return login_redirect()
    report = await _report(request, ctx)
    today = utcnow().date()
    presets = {days: urlencode({"from": (today - timedelta(days=days - 1)).isoformat(), "to": today.isoformat(),
                                **({"language": report.language} if report.language else {})})
               for days in (7, 30, 90, 365)}
    return render(request, "analytics.html", {
        "me": ctx.mentor, "csrf": ctx.csrf, "report": report, "figures": report.as_json(),
        "query": _query(report), "languages": LANGUAGES, "charts": charts.CHARTS, "presets": presets,
        "definitions": {"gap_min": int(CONVERSATION_GAP.total_seconds() // 60),
                        "sla_min": round(services_of(request).settings.handoff_sla_s / 60, 1),
                        "min_per_arm": MIN_PER_ARM, "low_confidence": round(LOW_CONFIDENCE * 100),
                        "holdout_pct": round(services_of(request).settings.reminder_holdout * 100, 1)},
    })


async def chart_svg(request: Request) -> Response:
    try:
        ctx = await require_lead(request)
    except LoginRequired:
        return Response(status_code=401)
    name = str(request.path_params["name"])
    if name not in charts.CHARTS:
        raise HTTPException(404, text("console_analytics_no_chart", ctx.lang))
    report = await _report(request, ctx)
    return Response(charts.render(name, report, ctx.lang), media_type="image/svg+xml",
                    headers={"Cache-Control": "private, max-age=60"})


async def analytics_csv(request: Request) -> Response:
    try:
        ctx = await require_lead(request)
    except LoginRequired:
        return login_redirect()
    return csv_response(await _report(request, ctx))


def routes() -> list[BaseRoute]:
    return [
        Route("/console/analytics", analytics_page, methods=["GET"]),
        Route("/console/analytics.csv", analytics_csv, methods=["GET"]),
        Route("/console/analytics/chart/{name}.svg", chart_svg, methods=["GET"]),
    ]
