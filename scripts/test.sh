#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine and runs the whole suite.
# Chromium (Debian's package) serves both the browser tests (Playwright) and Kaleido's image export.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: chromium is not installed; browser and image-export tests will be skipped" >&2
  fi
fi
# PostgreSQL (Debian's server, started by the tests in a temporary folder) for the shared-store tests.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "note: postgresql is not installed; the PostgreSQL tests will be skipped" >&2
  fi
fi
python3 -m pip install -q -r requirements-dev.txt
python3 -m pytest -q "$@"
