"""Admin API of the analytics (Bearer `ADMIN_API_TOKEN`): counts only, nothing personal.

GET /api/analytics?from=YYYY-MM-DD&to=YYYY-MM-DD[&language=xx]      the report as JSON
GET /api/analytics.csv?from=…&to=…[&language=xx]                     its daily series as CSV
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot.analytics.report import RangeError, Report, build_report, parse_range
from bot.runtime.services import Services
from bot.security.bearer import require_admin
from bot.storage.db import utcnow


async def _report(request: Request) -> Report | Response:
    if (denied := require_admin(request)) is not None:
        return denied
    services: Services = request.app.state.services
    params = request.query_params
    try:
        start, end, language = parse_range(params.get("from"), params.get("to"), params.get("language"),
                                           utcnow().date())
    except RangeError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return await build_report(services, start, end, language)


async def analytics_json(request: Request) -> Response:
    report = await _report(request)
    if isinstance(report, Response):
        return report
    return JSONResponse(report.as_json(), headers={"Cache-Control": "no-store"})


def csv_response(report: Report) -> Response:
    """The report's daily series as a CSV download (the API's and the console's)."""
    name = f"sanad-analytics-{report.start.isoformat()}-{report.end.isoformat()}.csv"
    return Response(report.csv(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})


async def analytics_csv(request: Request) -> Response:
    report = await _report(request)
    if isinstance(report, Response):
        return report
    return csv_response(report)


def routes() -> list[BaseRoute]:
    return [
        Route("/api/analytics", analytics_json, methods=["GET"]),
        Route("/api/analytics.csv", analytics_csv, methods=["GET"]),
    ]
