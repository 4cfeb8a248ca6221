#!/usr/bin/env bash
# Build the Debian package of this checkout: rdpbalancer_<version>-<revision>_<arch>.deb, a virtual
# environment for Debian 12's python3.11 under /opt/rdpbalancer with the systemd unit, the
# packaged configuration and the docs (packaging/debian; README "Debian package").
#
#   bash scripts/build-deb.sh                   # dist/rdpbalancer_0.1.0-1_amd64.deb
#   bash scripts/build-deb.sh --out DIR --revision 2 --find-links WHEELS
#
# The wheels (rdpbalancer's and every dependency's) are made here with pip (PYTHON, default python3,
# must be a 3.11 like Debian 12's: the extension modules are built for it); pip's own settings
# (PIP_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX) pass through, --find-links adds a folder of wheels.
# Then dpkg-buildpackage makes the venv from those wheels alone. Needs debhelper and python3.11-venv
# (scripts/install-test-deps.sh installs them). Prints the .deb's path last.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

OUT=$ROOT/dist
REVISION=1
FIND_LINKS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --revision) REVISION="$2"; shift 2 ;;
        --find-links) FIND_LINKS+=(--find-links "$2"); shift 2 ;;
        *) echo "build-deb.sh: unknown argument $1 (see the comment at the top)" >&2; exit 2 ;;
    esac
done
PYTHON="${PYTHON:-python3}"
say() { echo "build-deb.sh: $*" >&2; }

if [[ "$("$PYTHON" -c 'import sys; print(sys.version_info[:2] == (3, 11))')" != True ]]; then
    say "$PYTHON is not a Python 3.11: the wheels must fit Debian 12's python3.11 (set PYTHON=...)"
    exit 1
fi
VERSION=$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
DEB_VERSION="$VERSION-$REVISION"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
SRC="$WORK/rdpbalancer-$VERSION"

# The checkout's files as a clone has them (tracked, or new and not ignored): an editable install's
# stale *.egg-info here would put files in the wheel that the package data settings leave out.
# Outside a git checkout (an unpacked release), every file.
mkdir -p "$WORK/tree"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard
else
    find . -path ./.git -prune -o -path ./dist -prune -o -type f -print0
fi | tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null | tar -C "$WORK/tree" -xf -

say "wheels for rdpbalancer $VERSION and its dependencies ($("$PYTHON" --version))"
# async-timeout: redis-py needs it on Debian 12's Python 3.11.2 (before 3.11.3)
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check "${FIND_LINKS[@]}" \
    "$WORK/tree" async-timeout -w "$SRC/wheels"

mkdir -p "$SRC/packaging" "$OUT"
cp -r packaging/debian "$SRC/debian"
cp packaging/config.toml "$SRC/packaging/"
cp -r README.md SECURITY.md config.example.toml contrib "$SRC/"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
cat > "$SRC/debian/changelog" <<CHANGELOG
rdpbalancer ($DEB_VERSION) unstable; urgency=medium

  * Built by scripts/build-deb.sh from commit $commit.

 -- rdpbalancer maintainers <rdpbalancer@example.org>  $(date -R)
CHANGELOG

say "dpkg-buildpackage $DEB_VERSION"
(cd "$SRC" && dpkg-buildpackage -b -us -uc >"$WORK/build.log" 2>&1) || { tail -n 60 "$WORK/build.log" >&2; exit 1; }
deb=$(ls "$WORK"/rdpbalancer_"$DEB_VERSION"_*.deb)
cp "$deb" "$OUT/"
say "built $OUT/$(basename "$deb")"
echo "$OUT/$(basename "$deb")"
