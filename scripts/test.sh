#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian 12 machine, then run all of it:
# Debian packages (xrdp, freerdp2-x11, xvfb, ...), the Python packages, lint, types, tests.
# Tests start the services they need themselves (one set per test session).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k sticky`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e '.[test]'

echo "== ruff"
python3 -m ruff check rdpbalancer tests benchmarks
echo "== mypy (strict, the whole package)"
python3 -m mypy
echo "== pytest"
python3 -m pytest "$@"
