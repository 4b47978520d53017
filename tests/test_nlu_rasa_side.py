"""Sanad's Rasa-side modules, run in the Rasa environment (scripts in tests/rasa_side/): the tracker store
subclass writes the same rows and reads the same trackers as Rasa's SQLTrackerStore; the cached jsonschema
validators reject what jsonschema rejects."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bot.runtime.rasa import NLU_DIR, RasaNotInstalled, rasa_executable

SCRIPTS = Path(__file__).resolve().parent / "rasa_side"


def _run(script: str) -> str:
    try:
        python = rasa_executable().parent / "python"
    except RasaNotInstalled as exc:
        pytest.skip(f"needs the Rasa environment: {exc}")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore",
           "SQLALCHEMY_SILENCE_UBER_WARNING": "1"}
    result = subprocess.run([str(python), str(SCRIPTS / script)], cwd=NLU_DIR, capture_output=True, text=True,
                            timeout=300, env=env, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def test_tracker_store_matches_rasas_sql_tracker_store() -> None:
    assert "same rows and trackers" in _run("tracker_store_check.py")


def test_cached_schema_validation_rejects_what_jsonschema_rejects() -> None:
    assert "reject what jsonschema rejects" in _run("schema_cache_check.py")
