"""Running Rasa from the Sanad side: find its environment, train (cached), write endpoints, start it.

Rasa 3.6 lives in its own Python 3.10 virtual environment (`.venv-rasa`), so Sanad
drives it as a subprocess and talks to it over HTTP only."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

from bot.runtime.settings import PROJECT_ROOT, Settings

NLU_DIR = PROJECT_ROOT / "nlu"
MODELS_DIR = NLU_DIR / "models"
HASHED_PARTS = ("config.yml", "domain.yml", "data", "components")
KEEP_MODELS = 3  # a running Rasa may still use an older one


class RasaNotInstalled(RuntimeError):
    """No Rasa 3.6 environment was found."""


def rasa_executable() -> Path:
    """`SANAD_RASA_BIN`, else `.venv-rasa/bin/rasa` in the project, else `rasa` on PATH."""
    explicit = os.environ.get("SANAD_RASA_BIN")
    candidates = [Path(explicit)] if explicit else []
    candidates.append(PROJECT_ROOT / ".venv-rasa" / "bin" / "rasa")
    found = shutil.which("rasa")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise RasaNotInstalled(
        "Rasa 3.6.21 was not found. Create its environment with Python 3.10:\n"
        "  python3.10 -m venv .venv-rasa && .venv-rasa/bin/pip install rasa==3.6.21\n"
        "(or run `make install`), or set SANAD_RASA_BIN to the rasa executable."
    )


def nlu_hash(nlu_dir: Path = NLU_DIR) -> str:
    """A hash of everything that shapes the model, so an unchanged project is not retrained."""
    digest = hashlib.sha256()
    for part in HASHED_PARTS:
        root = nlu_dir / part
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []
        for path in files:
            if "__pycache__" in path.parts:
                continue
            digest.update(str(path.relative_to(nlu_dir)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def model_path(nlu_dir: Path = NLU_DIR) -> Path:
    return nlu_dir / "models" / f"sanad-{nlu_hash(nlu_dir)}.tar.gz"


def train(force: bool = False, nlu_dir: Path = NLU_DIR, quiet: bool = False) -> Path:
    """Train the model unless one for the current nlu/ exists; progress goes to the terminal."""
    target = model_path(nlu_dir)
    if target.exists() and not force:
        if not quiet:
            print(f"model up to date: {target.relative_to(nlu_dir.parent)}", flush=True)
        return target
    rasa = rasa_executable()
    print("training the Rasa model (a few minutes on 2 cores)...", flush=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", SQLALCHEMY_SILENCE_UBER_WARNING="1")
    subprocess.run(  # noqa: S603  (our own executable, fixed arguments)
        [str(rasa), "train", "--fixed-model-name", target.name.removesuffix(".tar.gz"), "--out", "models"],
        cwd=nlu_dir,
        env=env,
        check=True,
        stdout=sys.stdout,
        stderr=sys.stderr,
    )
    if not target.exists():
        raise RuntimeError(f"training finished but {target} is missing")
    prune_models(nlu_dir / "models", keep=KEEP_MODELS)
    return target


def prune_models(models_dir: Path, keep: int) -> list[Path]:
    """Delete all but the `keep` newest `sanad-<hash>` models (~65 MB each); returns what was deleted."""
    models = sorted(models_dir.glob("sanad-*.tar.gz"), key=lambda p: p.stat().st_mtime, reverse=True)
    removed = []
    for old in models[keep:]:
        try:
            old.unlink()
            removed.append(old)
        except FileNotFoundError:  # another `sanad train` pruned it first
            pass
    return removed


# Rasa's SQLTrackerStore with precompiled statements (nlu/components/tracker_store.py): same tables
TRACKER_STORE_CLASS = "components.tracker_store.SanadTrackerStore"


def tracker_store_section(settings: Settings) -> str:
    """Rasa's SQL tracker store at `RASA_TRACKER_STORE_URL`: the same place privacy erases and exports from."""
    url = settings.rasa_tracker_store_url
    if not url:
        url = f"sqlite:///{settings.var_dir / 'rasa_tracker.db'}"
    plain = url.replace("+asyncpg", "").replace("+psycopg2", "").replace("+aiosqlite", "")
    if plain.startswith("sqlite"):
        # SQLAlchemy's form: sqlite:///relative or sqlite:////absolute
        path = plain.split(":///", 1)[1] if ":///" in plain else ""
        if not path:
            raise ValueError(f"RASA_TRACKER_STORE_URL has no file: {url}")
        return f"tracker_store:\n  type: {TRACKER_STORE_CLASS}\n  dialect: sqlite\n  db: {path}\n"
    parsed = urlparse(plain)
    if not parsed.scheme.startswith("postgres"):
        raise ValueError("RASA_TRACKER_STORE_URL must be a sqlite:/// or postgresql:// URL")
    return (
        f"tracker_store:\n  type: {TRACKER_STORE_CLASS}\n  dialect: postgresql\n"
        f"  url: {parsed.hostname}\n  port: {parsed.port or 5432}\n"
        f"  db: {parsed.path.lstrip('/')}\n"
        f"  username: {parsed.username or 'postgres'}\n"
        f"  password: '{parsed.password or ''}'\n"
    )


def write_endpoints(settings: Settings, gateway_url: str, out_dir: Path | None = None) -> Path:
    """endpoints.yml and credentials.yml for this deployment (NLG at the gateway, actions, stores)."""
    out = out_dir or settings.var_dir / "rasa"
    out.mkdir(parents=True, exist_ok=True)
    endpoints = (
        f"nlg:\n  url: {gateway_url.rstrip('/')}/nlg\n"
        f"action_endpoint:\n  url: {settings.action_server_url}\n"
        + tracker_store_section(settings)
        # No lock store section: Rasa's in-memory lock store. A conversation keeps to one Rasa server
        # (RASA_URL routing by sender id) and the gateway's contact lease sends it one message at a
        # time, so the Redis lock store only cost CPU (~9 % of a turn, py-spy under bench/gateway_rasa.py).
    )
    (out / "endpoints.yml").write_text(endpoints, encoding="utf-8")
    (out / "credentials.yml").write_text("rest:\n", encoding="utf-8")
    return out


def rasa_command(settings: Settings, model: Path, config_dir: Path, port: int) -> list[str]:
    """`rasa run` with its HTTP API behind `RASA_TOKEN` (the gateway sends it with every call)."""
    return [
        str(rasa_executable()),
        "run",
        "--enable-api",
        *(["--auth-token", settings.rasa_token] if settings.rasa_token else []),
        "--port", str(port),
        "--interface", "127.0.0.1",
        "--model", str(model),
        "--endpoints", str(config_dir / "endpoints.yml"),
        "--credentials", str(config_dir / "credentials.yml"),
        "--log-file", str(settings.var_dir / "rasa.log"),
    ]
