"""What users install, built from this checkout: the wheelhouse, a venv with the wheel in it, and a
Docker engine with an image built from the wheelhouse (no registry is needed for any of them).

Everything here runs real tools (pip, venv, dockerd, debootstrap, docker build) and fails with
their output when one is missing or breaks: a missing component fails the test, it never skips.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from tests.support.balancer import stop_process

ROOT = Path(__file__).resolve().parents[2]
PIP_TIMEOUT_S = 600.0  # a cold pip cache downloads every dependency
BASE_INCLUDE = "python3,python3-venv,libcap2-bin"  # what the image's Dockerfile needs of its base
DEBOOTSTRAP_TIMEOUT_S = 900.0  # about 60-70 s on a warm mirror
BUILD_TIMEOUT_S = 900.0  # the vfs storage driver copies whole layers: a build takes 1-2 min
DOCKERD_START_S = 60.0
# Debian 12's python3 is 3.11.2: redis-py needs async-timeout before 3.11.3, which a wheelhouse
# made on a newer Python leaves out.
EXTRA_WHEELS = ("async-timeout",)


def project_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def run(argv: list[str], timeout_s: float, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion; its whole output in the error when it fails."""
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False, **kw)  # type: ignore[call-overload]
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {out.returncode}:\n"
                           f"{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
    return out  # type: ignore[no-any-return]


def clean_copy(dest: Path) -> Path:
    """The checkout's files as a fresh clone has them (tracked, or new and not ignored), without
    what a build or an editable install left here: an old `*.egg-info/SOURCES.txt` lists files that
    setuptools would then put in the wheel even when the package data settings leave them out."""
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], 60, cwd=ROOT).stdout
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def build_wheelhouse(dest: Path) -> Path:
    """`pip wheel . -w dest` in a clean copy of the checkout: the rdpbalancer wheel and every
    dependency, as a user's offline mirror."""
    dest.mkdir(parents=True, exist_ok=True)
    source = clean_copy(dest.parent / f"{dest.name}-source")
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", str(source),
         *EXTRA_WHEELS, "-w", str(dest)], PIP_TIMEOUT_S)
    wheels = list(dest.glob("rdpbalancer-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def make_venv(dest: Path, wheelhouse: Path, python: str = sys.executable) -> Path:
    """A fresh venv with rdpbalancer installed from the wheelhouse alone (no index, not editable)."""
    run([python, "-m", "venv", str(dest)], 120)
    run([str(dest / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-index", "--find-links", str(wheelhouse), "rdpbalancer"], PIP_TIMEOUT_S,
        env={k: v for k, v in os.environ.items() if not k.startswith("PIP_")})
    return dest


def apt_mirror() -> str:
    """The Debian mirror apt uses here (deb822 or one-line sources), for debootstrap."""
    for path in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        if path.exists():
            for match in re.finditer(r"(?m)^(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", path.read_text()):
                if "security" not in match.group(1):
                    return match.group(1)
    return "http://deb.debian.org/debian"


@dataclass
class DockerEngine:
    """Our own dockerd (its own data root, socket and PID), as the issue's set-up starts it:
    no iptables, no bridge (containers use --network=host), the vfs storage driver."""

    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.workdir / 'docker.sock'}"

    def docker(self, *args: str, timeout_s: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [docker_client(), "--host", self.host, *args]
        if check:
            return run(argv, timeout_s)
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)

    def start(self) -> None:
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise RuntimeError("dockerd is not installed (scripts/install-test-deps.sh installs docker.io)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "dockerd.log").open("ab")
        self.proc = subprocess.Popen(
            [dockerd, "--iptables=false", "--ip6tables=false", "--bridge=none", "--storage-driver=vfs",
             "--data-root", str(self.workdir / "data"), "--exec-root", str(self.workdir / "exec"),
             "--pidfile", str(self.workdir / "dockerd.pid"), "--host", self.host],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + DOCKERD_START_S
        while self.docker("version", check=False, timeout_s=10).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start:\n{(self.workdir / 'dockerd.log').read_text()[-4000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        # dockerd leaves its network namespace file bind-mounted under the exec root
        for mount in reversed(Path("/proc/self/mounts").read_text().splitlines()):
            target = mount.split()[1]
            if Path(target).is_relative_to(self.workdir):
                subprocess.run(["umount", "--lazy", target], capture_output=True, check=False, timeout=30)

    def import_debian_base(self, tag: str, cache: Path) -> str:
        """A Debian 12 base image with python3 (no registry): debootstrap from apt's mirror,
        then `docker import`. The root file system is kept as a tar in `cache` for later runs."""
        tar = cache / f"bookworm-minbase-{BASE_INCLUDE.replace(',', '-')}.tar"
        if not tar.exists():
            cache.mkdir(parents=True, exist_ok=True)
            rootfs = cache / "rootfs.tmp"
            shutil.rmtree(rootfs, ignore_errors=True)
            run(["debootstrap", "--variant=minbase", f"--include={BASE_INCLUDE}", "bookworm", str(rootfs),
                 apt_mirror()], DEBOOTSTRAP_TIMEOUT_S)
            run(["tar", "-C", str(rootfs), "-cf", f"{tar}.part", "."], 300)
            os.replace(f"{tar}.part", tar)
            shutil.rmtree(rootfs, ignore_errors=True)
        with tar.open("rb") as stdin:
            run([docker_client(), "--host", self.host, "import", "-", tag], 300, stdin=stdin)
        return tag


def docker_client() -> str:
    """Debian's docker client, which speaks the API version of Debian's dockerd (a newer client
    elsewhere on PATH may not)."""
    for candidate in ("/usr/bin/docker", shutil.which("docker")):
        if candidate and Path(candidate).exists():
            return candidate
    raise RuntimeError("docker is not installed (scripts/install-test-deps.sh installs docker.io)")


# What a booted Debian 12 needs to run the package under systemd (tests/install/test_deb.py): systemd
# as PID 1, dbus for systemctl, procps (/bin/kill of the unit's ExecReload, pgrep), and the package's
# dependencies, installed beforehand because the container has no network (`apt install ./the.deb`
# then needs nothing from a mirror).
SYSTEMD_INCLUDE = "systemd,systemd-sysv,dbus,procps,python3.11,adduser"


def debian_base_tar(cache: Path, include: str) -> Path:
    """A debootstrapped Debian 12 (minbase plus `include`) as a tar in `cache`, made once and
    kept for later runs, as `DockerEngine.import_debian_base` keeps the image's base."""
    tar = cache / f"bookworm-minbase-{include.replace(',', '-')}.tar"
    if not tar.exists():
        cache.mkdir(parents=True, exist_ok=True)
        rootfs = cache / f"rootfs-{os.getpid()}.tmp"
        shutil.rmtree(rootfs, ignore_errors=True)
        run(["debootstrap", "--variant=minbase", f"--include={include}", "bookworm", str(rootfs), apt_mirror()],
            DEBOOTSTRAP_TIMEOUT_S)
        run(["tar", "-C", str(rootfs), "-cf", f"{tar}.part", "."], 300)
        os.replace(f"{tar}.part", tar)
        shutil.rmtree(rootfs, ignore_errors=True)
    return tar
