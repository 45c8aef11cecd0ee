#!/usr/bin/env bash
# Set-up for a bare machine: the virtual environment and a check of the system parts.
# Called by `make venv` (and so by `make demo` and `make test`); safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

need_root_apt() {  # install Debian packages when we can, else say what to install
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "bootstrap: please install the Debian/Ubuntu packages: $*" >&2
    exit 1
  fi
}

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "bootstrap: Python 3.11+ is required (found $("$PYTHON" --version 2>&1))" >&2; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV" 2>/dev/null || { need_root_apt python3-venv; "$PYTHON" -m venv "$VENV"; }
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r requirements.txt
"$VENV/bin/python" -m pip install -q --no-deps -e .
# Local tooling (local_stack, generator, analyst_report, bench) is not part of the installed
# product; the repository root on the venv's path makes it importable from any folder.
"$VENV/bin/python" - <<'PY'
import pathlib, sysconfig
pathlib.Path(sysconfig.get_paths()["purelib"], "section_speed_local_tooling.pth").write_text(
    str(pathlib.Path.cwd()) + "\n"
)
PY

# The BigQuery emulator has dependencies Beam does not need: its own environment.
BQ_VENV=${BQ_VENV:-.venv-bqemulator}
if [ ! -x "$BQ_VENV/bin/python" ]; then "$PYTHON" -m venv "$BQ_VENV"; fi
"$BQ_VENV/bin/python" -m pip install -q --upgrade pip
"$BQ_VENV/bin/python" -m pip install -q -r requirements-bqemulator.txt

# The cars API renders plates with DejaVu fonts (Debian fonts-dejavu-core and -extra).
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf ]; then
  need_root_apt fonts-dejavu-core fonts-dejavu-extra
fi

# The desk's browser tests (Playwright, from requirements.txt) drive Debian's Chromium:
# Playwright's own browser download is not used.
if [ ! -x /usr/bin/chromium ]; then need_root_apt chromium; fi

# The desk's accessibility audit injects axe-core (npm, pinned by tests/browser/package-lock.json)
# into its pages; node_modules stays out of git.
if ! command -v npm >/dev/null; then need_root_apt nodejs npm; fi
(cd tests/browser && npm ci --ignore-scripts --no-audit --no-fund --silent)

# The desk's store: a throwaway PostgreSQL cluster per run (local_stack/postgres.py), from
# Debian's server package (any version under /usr/lib/postgresql/*/bin).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
  need_root_apt postgresql
fi

# The Pub/Sub emulator is a gcloud component (Java 17+); Java comes from Debian if missing.
if ! command -v java >/dev/null; then need_root_apt openjdk-17-jre-headless; fi
"$VENV/bin/python" - <<'PY'
from local_stack.services import ServiceUnavailable, _check_pubsub_emulator_installed
try:
    _check_pubsub_emulator_installed()
except ServiceUnavailable as error:
    raise SystemExit(f"bootstrap: {error}")
PY
echo "bootstrap: environment ready in $VENV"
