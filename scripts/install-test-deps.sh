#!/usr/bin/env bash
# Install the Debian packages the tests and benchmarks need:
#   xrdp            xrdp + xrdp-sesman, the RDP servers behind the balancer (tests/e2e)
#   freerdp2-x11    xfreerdp, the RDP client
#   xvfb            Xvfb, the X display xfreerdp draws on
#   coreutils       stdbuf (line-buffered client logs)
#   openssl         the harness makes a throw-away TLS certificate for xrdp
#   samba ...       a real Samba AD domain controller for the LDAP/AD group tests
#   redis-server    the shared sticky store of the high-availability tests
#   haproxy         the reference the benchmarks measure against (never used by the product)
#   chromium        the dashboard tests drive real headless Chromium
#   gcc, make       the benchmarks' C load generator and test server
#   systemd         systemd-analyze, to verify contrib/rdpbalancer.service (nothing is started)
#   docker.io       a real Docker engine: tests/install builds and runs the image (the tests start
#                   their own dockerd, with its own data root and socket)
#   debootstrap     the image's Debian 12 base, made locally (no container registry is needed)
#   python3-venv    Debian's own python3 with venv: the README's first command (scripts/install.sh)
#   tigervnc-standalone-server  Xvnc: real xrdp logons for the session-directory test (tests/e2e)
#   curl            contrib/xrdp-sessions.sh pushes a host's sessions with it
#   util-linux      unshare/nsenter: each xrdp host of that test in its own namespaces
#   faketime        libfaketime: the clock-step tests step the balancer's wall clock (tests/component)
#   keepalived      the HA pair's VRRP daemon (tests/ha/test_keepalived_pair.py, in network namespaces;
#                   no system keepalived is started: Debian's unit needs /etc/keepalived/keepalived.conf)
#   debhelper       dpkg-buildpackage and dh: scripts/build-deb.sh builds the Debian package
#   lintian         checks the package (tests/install/test_deb.py)
#   nftables        transparent mode's routing (contrib/transparent/rdpbalancer-transparent marks the
#                   replies for transparent sockets; tests/component/test_transparent.py runs it in
#                   network namespaces)
#   systemd-container  systemd-nspawn: that test boots a debootstrapped Debian 12 with systemd as PID 1
#                   in its own network namespace and installs the package in it
#
# Idempotent: when every package is installed already, it only says so (pass --force to run
# apt-get anyway).  Runs as root, or through sudo when that exists.
set -euo pipefail

PACKAGES=(
    xrdp freerdp2-x11 xvfb coreutils openssl
    samba samba-ad-dc samba-ad-provision samba-dsdb-modules samba-vfs-modules winbind krb5-user ldb-tools ldap-utils
    redis-server haproxy chromium chromium-driver gcc make libc6-dev procps iproute2 systemd
    docker.io debootstrap python3-venv tigervnc-standalone-server curl util-linux faketime keepalived
    debhelper lintian systemd-container nftables
)
BINARIES=(xrdp xrdp-sesman xfreerdp Xvfb stdbuf openssl samba samba-tool ldapsearch redis-server haproxy chromium gcc
          systemd-analyze dockerd debootstrap Xvnc curl unshare nsenter faketime keepalived
          dpkg-buildpackage dh lintian systemd-nspawn nft setpriv)
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

say() { echo "install-test-deps: $*"; }

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        echo "+ $*"
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        echo "+ sudo $*"
        sudo "$@"
    else
        say "need root (or sudo) to run: $*" >&2
        exit 1
    fi
}

missing_packages() {
    local pkg
    for pkg in "${PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
            echo "$pkg"
        fi
    done
}

mapfile -t MISSING < <(missing_packages)
if [[ ${#MISSING[@]} -eq 0 && $FORCE -eq 0 ]]; then
    say "already installed: ${PACKAGES[*]}"
else
    say "installing: ${PACKAGES[*]} (missing: ${MISSING[*]:-none})"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${PACKAGES[@]}"
fi

status=0
for bin in "${BINARIES[@]}"; do
    if ! command -v "$bin" >/dev/null 2>&1 && [[ ! -x "/usr/sbin/$bin" ]]; then
        say "ERROR: $bin not found after install" >&2
        status=1
    fi
done

# xrdp and xrdp-sesman refuse to start, even with --nodaemon, while a system daemon's pid file exists.
for pidfile in /var/run/xrdp/xrdp.pid /var/run/xrdp/xrdp-sesman.pid; do
    if [[ -e "$pidfile" ]]; then
        say "WARNING: $pidfile exists (a system xrdp is running?): the e2e tests will fail until it is" \
            "stopped, e.g. 'systemctl stop xrdp xrdp-sesman'" >&2
    fi
done

[[ $status -eq 0 ]] && say "ok: ${BINARIES[*]}"
exit $status
