"""`sanad nlu export-reviewed`: write the labelled review items as training data (bot/review/export.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from bot.review.export import NLU_DATA, NLU_TESTS, export_reviewed
from bot.runtime.services import Services
from bot.runtime.settings import Settings


def cmd_nlu(args: argparse.Namespace) -> int:
    async def main() -> int:
        services = Services.build(Settings.from_env())
        try:
            report = await export_reviewed(services, Path(args.data_dir), Path(args.tests_dir))
        finally:
            await services.close()
        print(json.dumps({"written": report.written, "files": report.files, "duplicates": report.duplicates,
                          "left_out_as_test_lines": report.skipped_test_lines}, ensure_ascii=False, indent=2))
        if report.files:
            print("run `sanad train` to learn from them")
        return 0

    return asyncio.run(main())


def register_cli(subparsers: Any) -> None:
    """Add `sanad nlu export-reviewed`."""
    parser = subparsers.add_parser("nlu", help="the Rasa project's data")
    sub = parser.add_subparsers(dest="nlu_command", required=True)
    export = sub.add_parser("export-reviewed",
                            help="write labelled review-inbox messages to nlu/data/<lang>/reviewed.yml")
    export.add_argument("--data-dir", default=str(NLU_DATA), help="the NLU data folder (default: nlu/data)")
    export.add_argument("--tests-dir", default=str(NLU_TESTS), help="test sets whose lines are never exported")
    parser.set_defaults(func=cmd_nlu)
