"""Gateway benchmark: Telegram updates through the real HTTP stack (uvicorn).

The gateway runs in its own process (`sanad gateway`); Rasa is replaced by an
instant local double and replies are captured by a local Bot API double, both in
this process on a bare asyncio protocol (bench/http_doubles.py), so that they take as
little as possible of the two cores the gateway shares with them. Two runs:
  throughput  wrk (Debian package) posts --wrk-n distinct updates as fast as the gateway takes
              them (webhook p50/p99 under that load); we wait until every reply reached the Bot
              API double: messages/s = replies / time to the last reply.
  latency     aiohttp posts updates at a fixed rate; per message, the webhook's answer time
              and the time from the POST to its reply arriving at the Bot API double.
Printed: messages/s, webhook and end-to-end p50/p99, CPU ms per message of the gateway
process (user and system time from /proc), the CPU per message of PostgreSQL, Redis and the
doubles, and the load average (other work on the machine skews every figure: compare runs
at a similar load).

Usage: .venv/bin/python -m bench.gateway [--db sqlite|postgres] [--n 5000] [--rate 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import httpx

from bench.http_doubles import InstantBotApi, InstantRasa
from tests.doubles import free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret"
TOKEN = "42:BENCH"
CLK_TCK = os.sysconf("SC_CLK_TCK")
BENCH_DB = f"sanad_bench_gw_{os.getpid()}"

# what learners write, in their five languages: each learner keeps to one language and one Telegram
# language_code, and every text is made distinct by the update id (nothing is answered from a cache)
LEARNER_TEXTS = {
    "en": ["when is my next deadline?", "I can't log in to my account", "can I talk to a mentor please",
           "where is my certificate for the python course", "will a university in Germany accept my credits"],
    "ar": ["متى الموعد النهائي القادم؟", "ما عم اقدر اعمل تسجيل دخول", "بدي احكي مع انسان لو سمحت",
           "mata el deadline taba3i", "هل ستقبل الجامعات ساعاتي المعتمدة"],
    "fa": ["مهلت تکلیف بعدی من کی است؟", "نمی‌توانم وارد حسابم شوم", "می‌خواهم با یک منتور صحبت کنم",
           "salam, mohlat tahvil kei hast?", "آیا دانشگاه واحدهای من را قبول می‌کند"],
    "fr": ["quand est ma prochaine date limite ?", "je n'arrive pas a me connecter", "je voudrais parler a un mentor",
           "ou est mon certificat du cours", "est-ce que les universites acceptent mes credits"],
    "de": ["wann ist meine naechste Abgabe?", "ich kann mich nicht einloggen",
           "ich moechte mit einem Menschen sprechen", "wo finde ich mein Zertifikat",
           "werden meine Credits an einer Uni anerkannt"],
}
LANGS = list(LEARNER_TEXTS)


def learner_text(chat: int, uid: int) -> tuple[str, str]:
    """(language code, distinct text) of a learner's message."""
    lang = LANGS[chat % len(LANGS)]
    texts = LEARNER_TEXTS[lang]
    return lang, f"{texts[uid % len(texts)]} #{uid}"


def _lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


WRK_TEXTS = "{" + ", ".join("{" + ", ".join(_lua_string(t) for t in LEARNER_TEXTS[lang]) + "}" for lang in LANGS) + "}"
WRK_LANGS = "{" + ", ".join(_lua_string(lang) for lang in LANGS) + "}"
WRK_SCRIPT = """
counter = 0
texts = """ + WRK_TEXTS.replace("%", "%%") + """
langs = """ + WRK_LANGS + """
request = function()
  counter = counter + 1
  local uid = %d + counter
  local chat = 100000 + (counter %% %d)
  local lang = (chat %% #langs) + 1
  local options = texts[lang]
  local text = options[(uid %% #options) + 1] .. " #" .. uid
  local body = string.format('{"update_id":%%d,"message":{"message_id":%%d,"date":1732790000,' ..
    '"chat":{"id":%%d,"type":"private","first_name":"B"},"from":{"id":%%d,"is_bot":false,' ..
    '"first_name":"B","language_code":"%%s"},"text":"%%s"}}', uid, uid, chat, chat, langs[lang], text)
  return wrk.format("POST", "/webhooks/telegram", {["Content-Type"]="application/json",
    ["X-Telegram-Bot-Api-Secret-Token"]="%s"}, body)
end
response = function(status, headers, body)
  if counter >= %d then wrk.thread:stop() end
end
"""


def cpu_s(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def others_cpu_s(gateway_pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of the other processes sharing the machine, by role: the
    PostgreSQL server (all its processes), Redis, and this process (the Rasa and Bot API doubles)."""
    totals = {"postgres": 0.0, "redis": 0.0, "doubles": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == gateway_pid:
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        used = (int(fields[11]) + int(fields[12])) / CLK_TCK
        if int(entry.name) == os.getpid():
            totals["doubles"] += used
        elif name.startswith("postgres"):
            totals["postgres"] += used
        elif name.startswith("redis-server"):
            totals["redis"] += used
    return totals


def others_per_message(before: dict[str, float], after: dict[str, float], messages: int) -> dict[str, float]:
    return {role: round((after[role] - before[role]) * 1000 / max(messages, 1), 3) for role in before}


def cpu_per_message(before: tuple[float, float], after: tuple[float, float], messages: int) -> dict[str, float]:
    user_ms = (after[0] - before[0]) * 1000 / max(messages, 1)
    sys_ms = (after[1] - before[1]) * 1000 / max(messages, 1)
    return {"user": round(user_ms, 3), "sys": round(sys_ms, 3), "total": round(user_ms + sys_ms, 3)}


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def prepare_db(kind: str, tmp: Path) -> dict[str, str]:
    if kind == "sqlite":
        return {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'bench.db'}"}
    # a database of this run only: another process on a shared database would take our messages
    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    await conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
    await conn.execute(f"CREATE DATABASE {BENCH_DB}")
    await conn.close()
    return {"DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{BENCH_DB}",
            "REDIS_URL": "redis://127.0.0.1:6379/0", "SANAD_REDIS_PREFIX": f"sanadbench:{os.getpid()}:"}


async def wait_http(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url) as resp:
                    if resp.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


async def drain(bot: InstantBotApi, expected: int, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while len(bot.sent) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return time.monotonic()


async def settle(bot: InstantBotApi, quiet_s: float = 1.0, timeout_s: float = 60) -> None:
    """Wait until no reply arrived for `quiet_s`: updates wrk had in flight when it stopped are answered."""
    deadline = time.monotonic() + timeout_s
    seen = -1
    while len(bot.sent) != seen and time.monotonic() < deadline:
        seen = len(bot.sent)
        await asyncio.sleep(quiet_s)


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="sanad-bench-"))
    bot = await InstantBotApi().start()
    rasa = await InstantRasa().start()
    port = free_port()
    env = dict(os.environ)
    env.update(await prepare_db(args.db, tmp))
    env.update({
        "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": SECRET, "TELEGRAM_API_BASE_URL": bot.url,
        "RASA_URL": rasa.url, "SANAD_VAR_DIR": str(tmp), "SANAD_SECRET_KEY": "bench", "PLATFORM_API_URL":
        "http://127.0.0.1:9", "PYTHONWARNINGS": "ignore",
        # the Bot API double does not throttle: measure the gateway, not the channel limits
        "TELEGRAM_RATE_PER_S": "1000000", "TELEGRAM_CHAT_RATE_PER_S": "1000000",
    })
    subprocess.run([str(ROOT / ".venv/bin/sanad"), "db", "upgrade"], env=env, check=True, cwd=ROOT)
    gateway = subprocess.Popen(
        [str(ROOT / ".venv/bin/sanad"), "gateway", "--port", str(port)], env=env, cwd=ROOT,
        stdout=open(tmp / "gateway.log", "wb"), stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_http(base + "/healthz")
        results: dict[str, Any] = {"db": args.db, "n": args.n, "loadavg_before": loadavg()}
        # warm-up
        await post_updates(base, 200, rate=None, start_id=1, chats=50, bot=bot)
        await drain(bot, 200, 30)
        bot.sent.clear()

        # 1) throughput with wrk
        if args.skip_wrk:
            results["wrk"] = "skipped"
        elif shutil.which("wrk"):
            script = tmp / "updates.lua"
            script.write_text(WRK_SCRIPT % (10_000_000, args.chats, SECRET, args.wrk_n))
            cpu0, others0, t0 = cpu_s(gateway.pid), others_cpu_s(gateway.pid), time.monotonic()
            # asynchronously: the Rasa and Bot API doubles answer from this process's event loop
            wrk = await asyncio.create_subprocess_exec(
                "wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "--latency", "-s", str(script), base,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            # wrk stops generating after --wrk-n (a few of them may still be in flight then)
            await drain(bot, args.wrk_n - args.connections, args.seconds + 120)
            if wrk.returncode is None:
                wrk.send_signal(signal.SIGINT)  # wrk prints its figures on SIGINT
            wrk_out = (await wrk.communicate())[0].decode()
            posted = int(next(line for line in wrk_out.splitlines() if "requests in" in line).split()[0])
            t_end = await drain(bot, posted, 120)
            cpu1, others1 = cpu_s(gateway.pid), others_cpu_s(gateway.pid)
            done = len(bot.sent)
            await settle(bot)
            results["wrk"] = {
                "posted": posted,
                "replied": done,
                "messages_per_s": round(done / (t_end - t0), 1),
                "gateway_cpu_ms_per_message": cpu_per_message(cpu0, cpu1, done),
                # the machine's other work per message (its 2 cores are shared): why messages/s stays
                # under 1 / (gateway CPU per message)
                "other_cpu_ms_per_message": others_per_message(others0, others1, done),
                "gateway_busy_share": round((sum(cpu1) - sum(cpu0)) / (t_end - t0), 2),
                "webhook_latency": parse_wrk_latency(wrk_out),
            }
            bot.sent.clear()
        else:
            results["wrk"] = "wrk not installed (apt-get install wrk)"

        # 2) end-to-end latency at a fixed rate with aiohttp
        spy = None
        if args.profile:
            spy = subprocess.Popen(
                [str(ROOT / ".venv/bin/py-spy"), "record", "-p", str(gateway.pid), "-f", "raw", "-o", args.profile,
                 "-r", "200", "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        cpu0 = cpu_s(gateway.pid)
        sent_at = await post_updates(base, args.n, rate=args.rate, start_id=20_000_000, chats=args.chats, bot=bot)
        await drain(bot, args.n, 120)
        cpu1 = cpu_s(gateway.pid)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)
        e2e = [(m["at"] - sent_at[m["text"]]) * 1000 for m in bot.sent if m["text"] in sent_at]
        results["fixed_rate"] = {
            "rate_per_s": args.rate,
            "replied": len(e2e),
            "webhook_ms_p50": round(pct(webhook_ms, 50), 2),
            "webhook_ms_p99": round(pct(webhook_ms, 99), 2),
            "end_to_end_ms_p50": round(pct(e2e, 50), 2),
            "end_to_end_ms_p99": round(pct(e2e, 99), 2),
            "gateway_cpu_ms_per_message": cpu_per_message(cpu0, cpu1, len(e2e)),
        }
        results["loadavg_after"] = loadavg()
        print(json.dumps(results, indent=2))
    finally:
        gateway.terminate()
        try:
            # waiting in a thread: the Rasa and Bot API doubles keep answering while the gateway drains
            await asyncio.to_thread(gateway.wait, 20)
        except subprocess.TimeoutExpired:
            print("gateway did not stop within 20 s; killed", file=sys.stderr)
            gateway.kill()
            gateway.wait()
        if args.keep_log:
            shutil.copy(tmp / "gateway.log", args.keep_log)
        await bot.stop()
        await rasa.stop()
        if args.db == "postgres":
            conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
            await conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
            await conn.close()
        shutil.rmtree(tmp, ignore_errors=True)


def parse_wrk_latency(output: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("50%", "99%"):
            found["p" + parts[0].rstrip("%")] = parts[1]
        if line.strip().startswith("Requests/sec"):
            found["requests_per_s"] = parts[-1]
    return found


async def post_updates(
    base: str, n: int, rate: float | None, start_id: int, chats: int, bot: InstantBotApi
) -> dict[str, float]:
    """POST n updates (at `rate` per second, or as fast as 32 connections go); returns text -> send time.

    Posted with httpx (32 keep-alive connections); its CPU is this process's, not the gateway's."""
    sent_at: dict[str, float] = {}
    webhook_ms.clear()
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"}
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=32, max_keepalive_connections=32), timeout=30.0)
    try:
        sem = asyncio.Semaphore(32)

        async def one(i: int) -> None:
            uid = start_id + i
            chat = 100000 + i % chats
            lang, text = learner_text(chat, uid)
            body = {"update_id": uid, "message": {"message_id": uid, "date": 1732790000, "text": text,
                    "chat": {"id": chat, "type": "private", "first_name": "B"},
                    "from": {"id": chat, "is_bot": False, "first_name": "B", "language_code": lang}}}
            async with sem:
                sent_at["re: " + text] = started = time.monotonic()
                response = await http.post(base + "/webhooks/telegram", content=json.dumps(body).encode(),
                                           headers=headers)
                webhook_ms.append((time.monotonic() - started) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"webhook answered {response.status_code}: {response.content[:200]!r}")

        tasks = []
        t0 = time.monotonic()
        for i in range(n):
            if rate:
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    finally:
        await http.aclose()
    return sent_at


webhook_ms: list[float] = []  # answer times of the last post_updates run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--n", type=int, default=2000, help="messages in the fixed-rate run")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=int, default=60, help="longest wrk run")
    parser.add_argument("--wrk-n", type=int, default=3000, help="updates wrk posts (it stops after them)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--profile", help="write py-spy collapsed stacks of the fixed-rate run here")
    parser.add_argument("--keep-log", help="copy the gateway's log here")
    parser.add_argument("--skip-wrk", action="store_true", help="only the fixed-rate run")
    parser.add_argument("--chats", type=int, default=1000, help="distinct learners")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
