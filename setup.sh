#!/usr/bin/env bash
# Creates .venv with the pinned runtime (requirements.txt) and test/dev (requirements-dev.txt)
# sets and the isim package (idempotent: a second run only checks). Used by the README's two
# commands and by CI. A GPU worker image needs requirements.txt only (see Dockerfile).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
# Debian packages the tests start for real: PostgreSQL's server binaries (a throwaway server on
# 127.0.0.1 for the tuning tests; the project itself needs none, its default study storage is
# a journal file), podman, runc and debootstrap (the worker image is built and run here), and
# chromium (headless: the MLflow UI and the dvc plots page as a browser shows them)
need=()
command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
for tool in podman runc debootstrap chromium; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "${need[@]}" >/dev/null; }
  else
    echo "setup: not found: ${need[*]} (Debian packages; the tests need them)" >&2
  fi
fi
# dvc plots' page with vega inline (DVC's own page loads it from a CDN: blank without internet)
if [ ! -f .dvc/plots.html ]; then
  "$PY" deploy/plots_template.py || echo "setup: no .dvc/plots.html (npm registry unreachable?): dvc plots show needs it" >&2
fi
stamp=.venv/.isim-installed
want=$(cat requirements.txt requirements-dev.txt pyproject.toml | sha1sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
start=$(date +%s)
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip==25.3
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
echo "$want" > "$stamp"
echo "setup: environment ready in $(( $(date +%s) - start )) s (.venv)"
