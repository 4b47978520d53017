"""nlu/domain.yml declares exactly the catalogue's `utter_` responses (sync_domain.py keeps it so)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from bot.i18n.catalogue import Catalogue

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = ROOT / "nlu" / "domain.yml"


def test_domain_responses_match_catalogue_utter_keys() -> None:
    domain = yaml.safe_load(DOMAIN.read_text(encoding="utf-8"))
    responses = set(domain.get("responses") or {})
    catalogue = {key for key in Catalogue.load().keys("en") if key.startswith("utter_")}
    assert responses == catalogue, {"only_domain": responses - catalogue, "only_catalogue": catalogue - responses}


def test_domain_is_in_sync_with_sync_script() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "nlu" / "sync_domain.py"), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_domain_declares_the_design_intents_and_actions() -> None:
    domain = yaml.safe_load(DOMAIN.read_text(encoding="utf-8"))
    intents = set(domain["intents"])
    assert intents == {
        "greet", "goodbye", "thank", "affirm", "deny", "bot_challenge", "ask_capabilities",
        "ask_programme_info", "ask_enrolment_how", "ask_enrolment_status", "ask_deadline", "ask_extension",
        "ask_recognition", "ask_certificate", "report_technical_problem", "request_human", "express_distress",
        "change_language", "stop_reminders", "start_reminders", "delete_my_data", "ask_account_linking",
        "out_of_scope",
    }
    assert set(domain["entities"]) == {"course", "university", "country", "language"}
    assert {"action_enrolment_status", "action_deadlines", "action_credits", "action_recognition",
            "action_certificate", "action_distress", "action_request_human"} <= set(domain["actions"])
