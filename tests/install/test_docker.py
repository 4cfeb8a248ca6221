"""The Docker image, built and run in a real Docker engine from the wheelhouse (no registry here:
the base is a Debian 12 made with debootstrap and `docker import`; the build installs from the
wheels in its context). One image build per test session; containers use --network=host to
reach the fake RDP servers on loopback."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.dashboard import fetch_dashboard
from tests.support.fakes import start_farm, where
from tests.support.packaging import ROOT, DockerEngine, project_version

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]  # the first test pays for the image

BASE_CACHE = Path.home() / ".cache" / "rdpbalancer-tests"  # the debootstrapped root file system, between runs
STOP_GRACE_S = 10  # `docker stop -t`: SIGTERM, then SIGKILL after this long (exit code 137)
SERVICE_UID_MIN = 100  # useradd --system: a uid of the system range, never 0


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerEngine]:
    engine = DockerEngine(Path(tmp_path_factory.mktemp("docker", numbered=True)))
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()
        shutil.rmtree(engine.workdir / "data", ignore_errors=True)


@pytest.fixture(scope="module")
def image(engine: DockerEngine, wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """`docker build --build-arg BASE=... --build-arg WHEELS=wheels` of the checkout's Dockerfile:
    the context holds the example configuration and the wheelhouse, as an offline build host has them."""
    base = engine.import_debian_base("rdpbalancer-test-base:bookworm", BASE_CACHE)
    context = tmp_path_factory.mktemp("docker-context")
    shutil.copy2(ROOT / "config.example.toml", context)
    shutil.copytree(wheelhouse, context / "wheels")
    tag = "rdpbalancer-test:latest"
    built = engine.docker("build", "-f", str(ROOT / "Dockerfile"), "--build-arg", f"BASE={base}",
                          "--build-arg", "WHEELS=wheels", "-t", tag, str(context), timeout_s=900)
    print("\n".join(line for line in built.stdout.splitlines() if line.startswith(("Step ", "Successfully"))))
    return tag


class Container:
    """One `docker run -d --network=host` of the image, with a config file and a state volume."""

    def __init__(self, engine: DockerEngine, image: str, config: Path, volume: str) -> None:
        self.engine, self.image, self.config, self.volume = engine, image, config, volume
        self.id = ""

    def run(self) -> str:
        self.id = self.engine.docker(
            "run", "-d", "--network=host", "-v", f"{self.volume}:/var/lib/rdpbalancer",
            "-v", f"{self.config}:/etc/rdpbalancer/config.toml:ro", self.image).stdout.strip()
        return self.id

    def state(self) -> dict[str, object]:
        out = self.engine.docker("inspect", "--format", "{{json .State}}", self.id)
        return dict(json.loads(out.stdout))

    def logs(self) -> str:
        out = self.engine.docker("logs", self.id, check=False)
        return out.stdout + out.stderr

    def remove(self) -> None:
        if self.id:
            self.engine.docker("rm", "-f", self.id, check=False)


def container_config(tmp_path: Path, port: int, admin_port: int, servers: list[tuple[str, str]]) -> Path:
    rows = ",\n".join(f'  {{ name = "{n}", address = "{a}" }}' for n, a in servers)
    path = tmp_path / "config.toml"
    path.write_text(f"""
[balancer]
listen = ["127.0.0.1:{port}"]
[sticky]
path = "/var/lib/rdpbalancer/sticky.db"
[health]
check = "rdp"
interval = "1s"
[admin]
listen = "127.0.0.1:{admin_port}"
[[pool]]
name = "default"
servers = [
{rows}
]
""")
    path.chmod(0o644)  # read by the container's unprivileged user
    return path


async def wait_for_http(url: str, container: Container, timeout_s: float = 60.0) -> None:
    """Until the container's API answers (a vfs container starts in seconds, not milliseconds)."""
    async with aiohttp.ClientSession() as http:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if asyncio.get_running_loop().time() > deadline or container.state().get("Running") is False:
                raise TimeoutError(f"{url} did not answer; container logs:\n{container.logs()[-4000:]}")
            await asyncio.sleep(0.2)


def test_the_image_runs_as_an_unprivileged_user(engine: DockerEngine, image: str) -> None:
    assert engine.docker("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip() == "rdpbalancer"
    uid = int(engine.docker("run", "--rm", "--entrypoint", "id", image, "-u").stdout)
    assert uid >= SERVICE_UID_MIN
    version = engine.docker("run", "--rm", image, "--version").stdout.strip()
    assert version == f"rdpbalancer {project_version()}"


async def test_container_routes_serves_the_dashboard_stops_cleanly_and_keeps_the_table(
        engine: DockerEngine, image: str, tmp_path: Path, fixed_port: Callable[[], int]) -> None:
    farm = await start_farm("TS01", "TS02")
    port, admin_port = fixed_port(), fixed_port()  # the second container must answer where the first did
    config = container_config(tmp_path, port, admin_port, [(s.name, s.address) for s in farm])
    volume = f"rdpb-test-state-{uuid.uuid4().hex[:8]}"
    first = Container(engine, image, config, volume)
    second = Container(engine, image, config, volume)
    base = f"http://127.0.0.1:{admin_port}"
    try:
        await asyncio.to_thread(first.run)
        await wait_for_http(f"{base}/healthz", first)
        # the balancer process itself (PID 1 of the container) is not root
        status = engine.docker("exec", first.id, "cat", "/proc/1/status").stdout
        uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
        assert all(int(u) >= SERVICE_UID_MIN for u in uids), uids

        pages = await fetch_dashboard(base)
        for path, (code, body) in pages.items():
            assert code == 200 and body, path
        async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
            assert resp.status == 200 and "rdpbalancer_build_info" in await resp.text()

        alice_server = await where(port, "alice")
        assert alice_server in ("TS01", "TS02")
        print(next(line for line in first.logs().splitlines() if " routed " in line))
        assert sum(s.accepted for s in farm) >= 1

        stop = await asyncio.to_thread(engine.docker, "stop", "-t", str(STOP_GRACE_S), first.id, timeout_s=60)
        assert stop.returncode == 0
        state = first.state()
        assert state["ExitCode"] == 0, first.logs()[-3000:]  # SIGTERM handled (137 would be the SIGKILL)
        assert "SIGTERM received, shutting down" in first.logs()
        await asyncio.to_thread(first.remove)

        await asyncio.to_thread(second.run)  # a new container on the same state volume
        await wait_for_http(f"{base}/healthz", second)
        async with aiohttp.ClientSession() as http, http.get(f"{base}/api/v1/sticky/alice") as resp:
            assert resp.status == 200
            assert (await resp.json())["server"] == alice_server
        assert await where(port, "alice") == alice_server
        routed = [line for line in second.logs().splitlines() if " routed " in line]
        assert "reason=sticky-hit" in routed[-1]
        print(f"docker stop: exit code {state['ExitCode']}; after docker rm and a new container:")
        print(routed[-1])
    finally:
        for container in (first, second):
            await asyncio.to_thread(container.remove)
        engine.docker("volume", "rm", "-f", volume, check=False)
        for server in farm:
            await server.stop()


@pytest.fixture(scope="module")
def transparent_image(engine: DockerEngine, image: str, wheelhouse: Path,
                      tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same Dockerfile built for transparent mode (README "Docker"): CAPS adds cap_net_admin.
    Its setcap step comes after the install, so the install's layer can come from the cache."""
    base = engine.import_debian_base("rdpbalancer-test-base:bookworm", BASE_CACHE)
    context = tmp_path_factory.mktemp("docker-context-transparent")
    shutil.copy2(ROOT / "config.example.toml", context)
    shutil.copytree(wheelhouse, context / "wheels")
    tag = "rdpbalancer-test:transparent"
    built = engine.docker("build", "-f", str(ROOT / "Dockerfile"), "--build-arg", f"BASE={base}", "--build-arg",
                          "WHEELS=wheels", "--build-arg", "CAPS=cap_net_bind_service,cap_net_admin", "-t", tag,
                          str(context), timeout_s=900)
    print("\n".join(line for line in built.stdout.splitlines() if line.startswith(("Step ", " ---> Using cache"))))
    return tag


async def test_transparent_mode_needs_the_capability_and_gets_it_as_documented(
        engine: DockerEngine, image: str, transparent_image: str, tmp_path: Path,
        fixed_port: Callable[[], int]) -> None:
    farm = await start_farm("TS01")
    port, admin_port = fixed_port(), fixed_port()
    config = container_config(tmp_path, port, admin_port, [(s.name, s.address) for s in farm])
    config.write_text(config.read_text().replace('name = "default"', 'name = "default"\ntransparent = true'))
    volume = f"rdpb-test-state-{uuid.uuid4().hex[:8]}"
    plain = Container(engine, image, config, volume)  # the default image: no cap_net_admin to give
    granted = Container(engine, transparent_image, config, volume)
    try:
        # the default image, even with --cap-add: its process has no CAP_NET_ADMIN, and says so at start
        plain.id = engine.docker("run", "-d", "--network=host", "--cap-add", "NET_ADMIN",
                                 "-v", f"{volume}:/var/lib/rdpbalancer",
                                 "-v", f"{config}:/etc/rdpbalancer/config.toml:ro", image).stdout.strip()
        exit_code = engine.docker("wait", plain.id, timeout_s=60).stdout.strip()
        assert exit_code == "1", plain.logs()[-3000:]
        assert "transparent = true (servers TS01)" in plain.logs() and "CAP_NET_ADMIN" in plain.logs()

        # the transparent image without --cap-add: the kernel refuses to start it (documented)
        refused = engine.docker("run", "--rm", "--network=host", transparent_image, "--version", check=False)
        assert refused.returncode != 0

        # built with CAPS and run with --cap-add NET_ADMIN: it starts, and connects from the client's address
        granted.id = engine.docker("run", "-d", "--network=host", "--cap-add", "NET_ADMIN",
                                   "-v", f"{volume}:/var/lib/rdpbalancer",
                                   "-v", f"{config}:/etc/rdpbalancer/config.toml:ro",
                                   transparent_image).stdout.strip()
        await wait_for_http(f"http://127.0.0.1:{admin_port}/healthz", granted)
        assert await where(port, "alice", local_host="127.0.0.3") == "TS01"
        routed = [line for line in granted.logs().splitlines() if " routed " in line]
        assert "host_saw=127.0.0.3:" in routed[-1], routed
        print(routed[-1])
    finally:
        for container in (plain, granted):
            await asyncio.to_thread(container.remove)
        engine.docker("volume", "rm", "-f", volume, check=False)
        for server in farm:
            await server.stop()
