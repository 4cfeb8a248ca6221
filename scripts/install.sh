#!/usr/bin/env bash
# Install rdpbalancer from this checkout into its own virtual environment, the way a user does:
# a regular (not editable) install, so what runs is the installed package, not this tree.
#
#   bash scripts/install.sh                 # /opt/rdpbalancer, linked as /usr/local/bin/rdpbalancer
#   bash scripts/install.sh --prefix DIR    # another venv; --no-link leaves /usr/local/bin alone
#
# A virtual environment because Debian 12's Python refuses system-wide pip installs (PEP 668,
# "externally-managed-environment"). python3-venv is installed with apt-get when missing.
# PYTHON=... picks the interpreter (default python3); pip's own settings (PIP_INDEX_URL,
# PIP_FIND_LINKS, PIP_NO_INDEX) pass through, e.g. to install from a wheelhouse.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=/opt/rdpbalancer
LINK=/usr/local/bin/rdpbalancer
while [[ $# -gt 0 ]]; do
    case "$1" in
        --prefix) PREFIX="$2"; shift 2 ;;
        --no-link) LINK=""; shift ;;
        *) echo "install.sh: unknown argument $1 (see the comment at the top)" >&2; exit 2 ;;
    esac
done
PYTHON="${PYTHON:-python3}"

say() { echo "install.sh: $*"; }

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else say "need root (or sudo) to run: $*" >&2; exit 1
    fi
}

# Debian splits venv (and ensurepip) out of python3: `python3 -m venv` fails without it.
if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    version=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    say "installing python${version}-venv (needed for a virtual environment)"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "python${version}-venv"
fi

say "virtual environment $PREFIX ($("$PYTHON" --version))"
"$PYTHON" -m venv "$PREFIX"
"$PREFIX/bin/python" -m pip install --quiet --disable-pip-version-check .
if [[ -n "$LINK" ]]; then
    ln -sf "$PREFIX/bin/rdpbalancer" "$LINK"
    say "linked $LINK -> $PREFIX/bin/rdpbalancer"
fi
say "installed $("$PREFIX/bin/rdpbalancer" --version)"
