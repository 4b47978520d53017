"""Personal answers from the learner's own record: enrolments, deadlines, credits, recognition, certificates.

Every action first checks the shared-phone PIN and the link; then it reads the
platform (through the cached, retried, circuit-broken client) and renders from
the catalogue in the learner's language and time zone. A platform 404 unlinks
the chat (gateway command `unlink`); an outage gets an honest answer and the
offer of a mentor. Nothing is said before all data is in, so an error never
leaves half an answer.
"""

from __future__ import annotations

import difflib
import logging
import re
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from babel import Locale
from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from bot.i18n.catalogue import Catalogue, Rendered, day_phrase, get_catalogue, local_time, number
from bot.mentoring.extensions import extension_lookup
from bot.runtime.settings import LANGUAGES
from bot.storage.db import utcnow
from flows.context import LearnerContext, gateway_command, learner_context, say, say_key
from flows.safety import may_be_distress, send_distress
from integrations.platform import (
    Deadline,
    Enrolment,
    LearnerNotFound,
    PlatformClient,
    PlatformDataError,
    PlatformUnavailable,
    make_platform_client,
)

log = logging.getLogger(__name__)

DEADLINE_WINDOW = timedelta(days=30)
COURSE_DEADLINE_WINDOW = timedelta(days=365)
MAX_DEADLINES = 3
MAX_UNIVERSITIES = 5

_client: PlatformClient | None = None


def platform_client() -> PlatformClient:
    """The action server's platform client, built on first use from the environment."""
    global _client
    if _client is None:
        from bot.runtime.coordination import make_coordinator
        from bot.runtime.settings import Settings

        settings = Settings.from_env()
        _client = make_platform_client(settings, make_coordinator(settings.redis_url, settings.redis_prefix))
    return _client


def set_platform_client(client: PlatformClient | None) -> None:
    """Replace the client (tests; an action server with its own wiring)."""
    global _client
    _client = client


# --- helpers -------------------------------------------------------------------

def _fold(text: str) -> str:
    """Lower case, no accents, no punctuation: for loose matching of course and country names."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(re.sub(r"[^\w]+", " ", stripped).split())


def match_course(wanted: str, titles: Iterable[tuple[str, str]]) -> str | None:
    """The course id whose title (or id) best matches `wanted`, loosely; None if nothing is close."""
    target = _fold(wanted)
    if not target:
        return None
    best: tuple[float, str] | None = None
    for course_id, title in titles:
        folded = _fold(title)
        if target in (_fold(course_id), folded):
            return course_id
        score = difflib.SequenceMatcher(None, target, folded).ratio()
        words, title_words = set(target.split()), set(folded.split())
        if target in folded or folded in target:
            score = max(score, 0.9)
        elif words and title_words:
            score = max(score, 0.85 * len(words & title_words) / len(words))
        if best is None or score > best[0]:
            best = (score, course_id)
    return best[1] if best is not None and best[0] >= 0.6 else None


@lru_cache(maxsize=1)
def _country_names() -> dict[str, str]:
    """Folded country name (in each catalogue language) -> ISO code."""
    names: dict[str, str] = {}
    for lang in LANGUAGES:
        for code, name in Locale.parse(lang).territories.items():
            if len(code) == 2 and code.isalpha():
                names.setdefault(_fold(name), code)
    return names


# Latin spellings learners use in Arabizi and Finglish, and short forms Babel does not list
COUNTRY_ALIASES: dict[str, str] = {
    "almanya": "DE", "almania": "DE", "almaniya": "DE", "almanie": "DE", "alman": "DE", "almaan": "DE",
    "faransa": "FR", "fransa": "FR", "faranse": "FR", "faransa w": "FR",
    "turkia": "TR", "turkiya": "TR", "torkiye": "TR", "torkie": "TR", "turkey": "TR", "turkei": "TR",
    "lubnan": "LB", "libnan": "LB", "lebnan": "LB",
    "urdun": "JO", "urdon": "JO", "ordon": "JO", "ordun": "JO", "el urdon": "JO",
    "souria": "SY", "suria": "SY", "surya": "SY", "sourya": "SY", "soorie": "SY",
    "nemsa": "AT", "namsa": "AT", "otrish": "AT",
    "holanda": "NL", "holand": "NL", "holland": "NL", "hollanda": "NL",
    "kanada": "CA", "iraq": "IQ", "el 3ira2": "IQ", "3ira2": "IQ", "masr": "EG", "misr": "EG",
    "engelestan": "GB", "inglistan": "GB", "england": "GB", "britain": "GB", "uk": "GB", "briitania": "GB",
    "usa": "US", "america": "US", "amrika": "US", "amerika": "US", "usa uni": "US",
    "afghanestan": "AF", "afganistan": "AF",
}
# words and clitics glued to or put before a place name: "in Deutschland", "en France", "بألمانيا",
# "fi almanya", "در آلمان", "to the UK"
_PLACE_PREFIXES = re.compile(
    r"^(?:(?:in|to|for|at|the|en|au|aux|a|à|la|le|l|nach|aus|im|in der|der|die|fi|fe|bi|b|f|el|al|dar|be|"
    r"في|فى|الى|إلى|على|ع|ب|بـ|ف|ل|ال|بال|لل|در|به|از)\s+)+",
)
_ARABIC_CLITIC = re.compile(r"^(?:وب|وبال|بال|وال|لل|فال|ب|ف|ل|و|ال)(?=[\u0600-\u06ff]{3,})")


def _country_candidates(text: str) -> list[str]:
    """The folded text, without leading prepositions, and (Arabic script) without glued clitics."""
    folded = _fold(text)
    found = [folded]
    stripped = _PLACE_PREFIXES.sub("", folded).strip()
    if stripped and stripped != folded:
        found.append(stripped)
    for candidate in list(found):
        glued = _ARABIC_CLITIC.sub("", candidate)
        if glued != candidate:
            found.append(glued)
    return found


def resolve_country(raw: str | None) -> str | None:
    """`DE`, `Germany`, `Allemagne`, `in Deutschland`, `ألمانيا`, `بألمانيا`, `fi almanya`, `آلمان` -> `DE`;
    None when unknown."""
    if not raw:
        return None
    text = raw.strip().strip("?!.،؟")
    if len(text) == 2 and text.isalpha() and text.isascii():
        return text.upper()
    names = _country_names()
    candidates = _country_candidates(text)
    for candidate in candidates:
        if candidate in names:
            return names[candidate]
        if candidate in COUNTRY_ALIASES:
            return COUNTRY_ALIASES[candidate]
        for prefix in ("the ", "la ", "le ", "l ", "al"):
            if candidate.startswith(prefix) and candidate[len(prefix):].strip() in names:
                return names[candidate[len(prefix):].strip()]
    for candidate in candidates:
        close = difflib.get_close_matches(candidate, [*names, *COUNTRY_ALIASES], n=1, cutoff=0.85)
        if close:
            return names.get(close[0]) or COUNTRY_ALIASES[close[0]]
    return None


def country_name(code: str, language: str) -> str:
    try:
        return str(Locale.parse(language).territories.get(code.upper(), code))
    except (ValueError, TypeError):
        return code


def _entity_or_slot(tracker: Tracker, name: str) -> str | None:
    value = next(tracker.get_latest_entity_values(name), None)
    if not value and name in (tracker.slots or {}):
        value = tracker.get_slot(name)
    if isinstance(value, list):
        value = value[0] if value else None
    return str(value).strip() if value else None


def _join(lines: list[str]) -> str:
    return "\n".join(lines)


def _status_label(cat: Catalogue, status: str, language: str) -> str:
    key = f"learner_enrolment_status_{status}"
    return cat.text(key, language) if cat.has(key) else status


# --- the shared frame of every personal answer -----------------------------------

class PersonalAction(Action, ABC):  # type: ignore[misc]
    """PIN check, link check, platform errors; subclasses compose the answer (abstract: not registered)."""

    @abstractmethod
    def name(self) -> str: ...

    @abstractmethod
    async def answer(self, ctx: LearnerContext, learner_id: str, tracker: Tracker, client: PlatformClient,
                     now: datetime) -> list[Rendered]: ...

    async def answer_with_events(self, ctx: LearnerContext, learner_id: str, tracker: Tracker,
                                 client: PlatformClient, now: datetime) -> tuple[list[Rendered], list[EventType]]:
        """The answer and the slot events that go with it (none, unless a subclass says otherwise)."""
        return await self.answer(ctx, learner_id, tracker, client, now), []

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        ctx = learner_context(tracker)
        if ctx.pin_required:
            say_key(dispatcher, ctx, "pin_required")  # defined by the privacy area
            return []
        if ctx.learner_id is None:
            say_key(dispatcher, ctx, "learner_not_linked")
            return []
        try:
            replies, events = await self.answer_with_events(ctx, ctx.learner_id, tracker, platform_client(), utcnow())
        except LearnerNotFound:
            gateway_command(dispatcher, "unlink")
            say_key(dispatcher, ctx, "learner_unknown")
            return []
        except (PlatformUnavailable, PlatformDataError) as exc:
            log.warning("%s: platform answer unusable: %s", self.name(), exc)
            say_key(dispatcher, ctx, "learner_platform_down")
            return []
        for reply in replies:
            say(dispatcher, reply)
        return events


class ActionEnrolmentStatus(PersonalAction):
    """Each enrolment with its status and progress."""

    def name(self) -> str:
        return "action_enrolment_status"

    async def answer(self, ctx: LearnerContext, learner_id: str, tracker: Tracker, client: PlatformClient,
                     now: datetime) -> list[Rendered]:
        cat, lang = get_catalogue(), ctx.language
        enrolments = await client.enrolments(learner_id)
        if not enrolments:
            return [cat.render("learner_enrolments_none", lang)]
        order = {"active": 0, "pending": 1, "completed": 2, "dropped": 3}
        lines = [cat.text("learner_enrolments_header", lang)]
        for e in sorted(enrolments, key=lambda e: (order.get(e.status, 4), e.course_title)):
            lines.append(cat.text("learner_enrolment_line", lang, course=e.course_title, provider=e.provider,
                                  status=_status_label(cat, e.status, lang),
                                  progress=number(round(e.progress_pct), lang)))
        return [Rendered(_join(lines))]


class ActionDeadlines(PersonalAction):
    """The next three open deadlines within 30 days, or those of one named course."""

    def name(self) -> str:
        return "action_deadlines"

    async def answer(self, ctx: LearnerContext, learner_id: str, tracker: Tracker, client: PlatformClient,
                     now: datetime) -> list[Rendered]:
        cat, lang = get_catalogue(), ctx.language
        wanted = _entity_or_slot(tracker, "course")
        # the window starts on the hour so the cache serves a whole conversation
        start = now.replace(minute=0, second=0, microsecond=0)
        span = COURSE_DEADLINE_WINDOW if wanted else DEADLINE_WINDOW
        end = start + span + timedelta(hours=1)
        items = await client.deadlines(learner_id, start, end)
        # a mentor's extension replaces the platform's date (bot/mentoring/extensions.py)
        items, extended = await extension_lookup().apply(learner_id, items, client, start, end)
        tz = ctx.timezone or (await client.learner(learner_id)).timezone
        open_items = [d for d in items if not d.submitted and now <= d.due_at <= now + span]
        if wanted:
            enrolments = await client.enrolments(learner_id)
            titles = {e.course_id: e.course_title for e in enrolments}
            titles.update({d.course_id: d.course_title for d in items})
            course_id = match_course(wanted, titles.items())
            if course_id is None:
                courses = ", ".join(sorted({e.course_title for e in enrolments})) or "-"
                return [cat.render("learner_deadlines_course_unknown", lang, course=wanted, courses=courses)]
            title = titles[course_id]
            mine = [d for d in open_items if d.course_id == course_id]
            if not mine:
                return [cat.render("learner_deadlines_course_none", lang, course=title)]
            header = cat.text("learner_deadlines_course_header", lang, course=title)
            return [Rendered(_join([header, *self._lines(cat, mine, now, tz, lang, extended)]))]
        if not open_items:
            return [cat.render("learner_deadlines_none", lang)]
        header = cat.text("learner_deadlines_header", lang)
        return [Rendered(_join([header, *self._lines(cat, open_items[:MAX_DEADLINES], now, tz, lang, extended)]))]

    @staticmethod
    def _lines(cat: Catalogue, items: list[Deadline], now: datetime, tz: str | None, lang: str,
               extended: set[str]) -> list[str]:
        return [
            cat.text("learner_deadline_line", lang, day=day_phrase(d.due_at, now, tz, lang),
                     time=local_time(d.due_at, tz, lang), title=d.title, course=d.course_title)
            + (" " + cat.text("learner_deadline_extended", lang) if d.id in extended else "")
            for d in items
        ]


class ActionCredits(PersonalAction):
    """Earned and in-progress ECTS, module by module."""

    def name(self) -> str:
        return "action_credits"

    async def answer(self, ctx: LearnerContext, learner_id: str, tracker: Tracker, client: PlatformClient,
                     now: datetime) -> list[Rendered]:
        cat, lang = get_catalogue(), ctx.language
        credits = await client.credits(learner_id)
        if not credits:
            return [cat.render("learner_credits_none", lang)]
        earned = [c for c in credits if c.status == "earned"]
        progress = [c for c in credits if c.status == "in_progress"]
        lines = [cat.text("learner_credits_summary", lang, earned=number(sum(c.ects for c in earned), lang),
                          in_progress=number(sum(c.ects for c in progress), lang))]
        for header, group in (("learner_credits_earned_header", earned), ("learner_credits_progress_header", progress)):
            if group:
                lines.append(cat.text(header, lang))
                lines.extend(cat.text("learner_credit_line", lang, module=c.module_title, ects=number(c.ects, lang))
                             for c in group)
        return [Rendered(_join(lines))]


# the learner was asked for a place (slot `awaiting_place`); any other clear intent clears it (domain.yml)
AWAITING_PLACE = "awaiting_place"
PLACE_INTENTS = ("out_of_scope", "nlu_fallback", "ask_recognition")
MAX_PLACE_WORDS = 5
MAX_PLACE_CHARS = 60
UNIVERSITY_WORDS = ("univ", "uni ", "hochschule", "college", "institut", "école", "ecole", "جامعة", "جامعه",
                    "دانشگاه", "پوهنتون", "daneshgah", "jam3a", "jami3a")


def looks_like_university(text: str) -> bool:
    lowered = f"{text.lower()} "
    return any(word in lowered for word in UNIVERSITY_WORDS)


def place_from_text(text: str) -> str | None:
    """A short reply that may name a place ("Ireland", "TU Berlin", "fi almanya"); None for a sentence."""
    cleaned = text.strip().strip("?!.،؟")
    if (not cleaned or cleaned.startswith("/") or len(cleaned) > MAX_PLACE_CHARS
            or len(cleaned.split()) > MAX_PLACE_WORDS or not any(ch.isalpha() for ch in cleaned)):
        return None
    return cleaned


class ActionRecognition(PersonalAction):
    """Which earned modules partner universities (of a country, or one university) would recognise.

    No Rasa form: a credits question without a place gets the learner's credits and one question
    (which country or university?), and the slot `awaiting_place` is set. The next message is taken
    as a place only if it has no other clear intent (its intent is out_of_scope, nlu_fallback or
    ask_recognition: domain.yml clears the slot on every other intent, whose own rule answers it).
    """

    def name(self) -> str:
        return "action_recognition"

    async def answer(self, ctx: LearnerContext, learner_id: str, tracker: Tracker, client: PlatformClient,
                     now: datetime) -> list[Rendered]:
        replies, _ = await self.answer_with_events(ctx, learner_id, tracker, client, now)
        return replies

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        latest = tracker.latest_message or {}
        intent = (latest.get("intent") or {}).get("name")
        has_place = any(tracker.get_latest_entity_values("country")) or any(
            tracker.get_latest_entity_values("university"))
        if intent != "ask_recognition" and not has_place:
            # the reply to "which country or university?" (rules route it here only while awaiting_place)
            ctx = learner_context(tracker)
            if may_be_distress(latest):
                send_distress(dispatcher, ctx)
                return [SlotSet(AWAITING_PLACE, False)]
            text = str(latest.get("text") or "")
            if not any(ch.isalpha() for ch in text):
                say_key(dispatcher, ctx, "dialogue_recognition_unclear")
                return [SlotSet(AWAITING_PLACE, True)]
            if place_from_text(text) is None:
                # a sentence that names no place is not an answer: say what we can't do, ask once more
                say_key(dispatcher, ctx, "utter_out_of_scope")
                say_key(dispatcher, ctx, "dialogue_form_ask_again")
                return [SlotSet(AWAITING_PLACE, False)]
        return await super().run(dispatcher, tracker, domain)

    async def answer_with_events(self, ctx: LearnerContext, learner_id: str, tracker: Tracker,
                                 client: PlatformClient, now: datetime) -> tuple[list[Rendered], list[EventType]]:
        latest = tracker.latest_message or {}
        intent = (latest.get("intent") or {}).get("name")
        awaiting = bool(tracker.slots.get(AWAITING_PLACE)) if tracker.slots else False
        done: list[EventType] = [SlotSet(AWAITING_PLACE, False)]
        country_raw = next(tracker.get_latest_entity_values("country"), None)
        university = next(tracker.get_latest_entity_values("university"), None)
        if not country_raw and not university and (awaiting or intent != "ask_recognition"):
            place = place_from_text(str(latest.get("text") or ""))
            if place and (intent != "ask_recognition" or resolve_country(place) or looks_like_university(place)):
                if looks_like_university(place) and not resolve_country(place):
                    university = place
                else:
                    country_raw = place
        if not country_raw and not university:
            if awaiting:
                # asked once already: every partner university, with the hint
                return await self.recognition(ctx, learner_id, client, None, None), done
            credits = await ActionCredits().answer(ctx, learner_id, tracker, client, now)
            return [*credits, get_catalogue().render("dialogue_ask_country", ctx.language)], [
                SlotSet(AWAITING_PLACE, True)]
        return await self.recognition(ctx, learner_id, client, country_raw, university), done

    @staticmethod
    async def recognition(ctx: LearnerContext, learner_id: str, client: PlatformClient, country_raw: str | None,
                          university: str | None) -> list[Rendered]:
        cat, lang = get_catalogue(), ctx.language
        country_raw = str(country_raw).strip() if country_raw else None
        university = str(university).strip() if university else None
        country = resolve_country(country_raw) or (country_raw or None)
        credits = await client.credits(learner_id)
        universities = await client.recognition(country=country, university=university)
        if university:
            place = university
        elif country:
            place = country_name(country, lang) if len(country) == 2 else country
        else:
            place = ""
        earned = {c.module_id for c in credits if c.status == "earned"}
        if not earned:
            return [cat.render("learner_recognition_no_credits", lang)]
        results = []
        for uni in universities:
            modules = [m for m in uni.modules if m.module_id in earned]
            if modules:
                results.append((sum(m.ects for m in modules), uni, modules))
        if not results:
            return [cat.render("learner_recognition_none", lang, place=place or "-")]
        results.sort(key=lambda r: (-r[0], r[1].university_name))
        header = (cat.text("learner_recognition_header", lang, place=place) if place
                  else cat.text("learner_recognition_header_all", lang))
        lines = [header]
        for ects, uni, modules in results[:MAX_UNIVERSITIES]:
            lines.append(cat.text(
                "learner_recognition_line", lang, university=uni.university_name,
                country=country_name(uni.country, lang), modules=", ".join(m.module_title for m in modules),
                ects=number(ects, lang), url=uni.info_url,
            ))
        if not place:
            lines.append(cat.text("learner_recognition_hint", lang))
        return [Rendered(_join(lines))]


class ActionCertificate(PersonalAction):
    """Completed courses and how to get their certificates."""

    def name(self) -> str:
        return "action_certificate"

    async def answer(self, ctx: LearnerContext, learner_id: str, tracker: Tracker, client: PlatformClient,
                     now: datetime) -> list[Rendered]:
        cat, lang = get_catalogue(), ctx.language
        completed: list[Enrolment] = [e for e in await client.enrolments(learner_id) if e.status == "completed"]
        if not completed:
            return [cat.render("learner_certificate_none", lang)]
        lines = [cat.text("learner_certificate_header", lang)]
        lines.extend(cat.text("learner_certificate_line", lang, course=e.course_title, provider=e.provider)
                     for e in sorted(completed, key=lambda e: e.course_title))
        lines.append(cat.text("learner_certificate_howto", lang))
        return [Rendered(_join(lines))]
