"""Benchmark the NLU model: training time and /model/parse latency.

    .venv-rasa/bin/python bench/nlu.py [--skip-train] [--messages 300]

Times `rasa train --fixed-model-name sanad --out models` in nlu/ (unless
--skip-train), starts `rasa run --enable-api` with that model on a free local
port, sends the held-out test messages (all five languages, cycled) to
/model/parse one at a time and prints p50/p99/mean latency. Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
NLU_DIR = ROOT / "nlu"
RASA = Path(sys.executable).parent / "rasa"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_messages() -> list[str]:
    texts: list[str] = []
    for path in sorted((NLU_DIR / "tests").glob("nlu_*.yml")):
        for block in yaml.safe_load(path.read_text(encoding="utf-8"))["nlu"]:
            texts += [line[2:].strip() for line in block["examples"].splitlines() if line.startswith("- ")]
    return texts


def train() -> float:
    started = time.perf_counter()
    subprocess.run([str(RASA), "train", "--fixed-model-name", "sanad", "--out", "models", "--force"],
                   cwd=NLU_DIR, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def post(url: str, body: dict[str, str]) -> dict[str, object]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 180.0) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if process.poll() is not None:
            raise RuntimeError("rasa run exited early")
        try:
            with urllib.request.urlopen(f"{url}/status", timeout=2) as response:
                if json.loads(response.read()).get("model_file"):
                    return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("rasa run did not become ready")


def main() -> int:
    parser = argparse.ArgumentParser(description="NLU training time and parse latency")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--messages", type=int, default=300)
    args = parser.parse_args()

    if not args.skip_train:
        print(f"training time: {train():.1f} s  (rasa train, {os.cpu_count()} CPUs)")
    model = NLU_DIR / "models" / "sanad.tar.gz"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [str(RASA), "run", "--enable-api", "--model", str(model), "--port", str(port), "-i", "127.0.0.1"],
        cwd=NLU_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        print(f"server ready after: {wait_ready(url, process):.1f} s")
        texts = test_messages()
        for text in texts[:10]:  # warm up
            post(f"{url}/model/parse", {"text": text})
        latencies_ms = []
        for i in range(args.messages):
            started = time.perf_counter()
            post(f"{url}/model/parse", {"text": texts[i % len(texts)]})
            latencies_ms.append((time.perf_counter() - started) * 1000)
        latencies_ms.sort()
        p50 = statistics.median(latencies_ms)
        p99 = latencies_ms[min(len(latencies_ms) - 1, int(len(latencies_ms) * 0.99))]
        print(f"/model/parse over {len(latencies_ms)} messages: p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
              f"mean {statistics.fmean(latencies_ms):.1f} ms")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
