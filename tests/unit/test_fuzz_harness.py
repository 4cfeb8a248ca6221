"""The atheris harnesses in fuzz/: every seed and every saved crash input passes through
both TestOneInput functions, a harness crashes on anything but the documented refusal,
and each harness runs under libFuzzer for a bounded number of runs.

atheris is a test dependency: without it the libFuzzer test fails instead of skipping,
so that CI cannot silently stop fuzzing.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
FUZZ = ROOT / "fuzz"
REGRESSIONS = ROOT / "tests" / "data" / "fuzz-regressions"
HARNESSES = {"request": FUZZ / "fuzz_request.py", "proxy": FUZZ / "fuzz_proxy.py"}
FUZZ_RUNS = 20000
FUZZ_SECONDS = 60  # libFuzzer stops at whichever comes first
INSTALL_HINT = "atheris is missing: pip install 'atheris>=2.3' (a manylinux wheel, nothing to compile)"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"fuzz_{name}", HARNESSES[name])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def inputs() -> list[Path]:
    seeds = sorted((FUZZ / "corpus").glob("*/*"))
    saved = sorted(p for p in REGRESSIONS.rglob("*") if p.is_file() and p.suffix != ".md")
    return seeds + saved


@pytest.fixture(scope="module")
def harnesses() -> dict[str, Callable[[bytes], None]]:
    return {name: load(name).TestOneInput for name in HARNESSES}


def test_there_are_seeds_for_both_harnesses() -> None:
    for name in HARNESSES:
        assert list((FUZZ / "corpus" / name).iterdir()), name


@pytest.mark.parametrize("path", inputs(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_seed_and_regression_passes_both_harnesses(
    path: Path, harnesses: dict[str, Callable[[bytes], None]]
) -> None:
    data = path.read_bytes()
    for test_one_input in harnesses.values():
        test_one_input(data)  # returns: any exception here is a bug the fuzzer would report
        test_one_input(data[: len(data) // 2])
        test_one_input(data + b"\x00")


def test_harnesses_accept_the_empty_input(harnesses: dict[str, Callable[[bytes], None]]) -> None:
    for test_one_input in harnesses.values():
        test_one_input(b"")


@pytest.mark.parametrize(("name", "target"), [("request", "parse_connection_request"), ("proxy", "parse_proxy_header")])
def test_harness_lets_other_exceptions_crash(name: str, target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load(name)

    def broken(*_: object) -> None:
        raise IndexError("a parser bug")

    monkeypatch.setattr(module, target, broken)
    seed = next(iter(sorted((FUZZ / "corpus" / name).iterdir()))).read_bytes()
    with pytest.raises(IndexError):
        module.TestOneInput(seed)


@pytest.mark.slow
@pytest.mark.timeout(FUZZ_SECONDS * 3)
@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_harness_runs_under_libfuzzer(name: str, tmp_path: Path) -> None:
    if importlib.util.find_spec("atheris") is None:
        pytest.fail(INSTALL_HINT)
    corpus = tmp_path / "corpus"  # libFuzzer writes new inputs into its first directory: not the seeds
    shutil.copytree(FUZZ / "corpus" / name, corpus)
    command = [
        sys.executable,
        str(HARNESSES[name]),
        str(corpus),
        f"-runs={FUZZ_RUNS}",
        f"-max_total_time={FUZZ_SECONDS}",
        f"-artifact_prefix={tmp_path}/",
        "-print_final_stats=1",
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=FUZZ_SECONDS * 2, check=False)
    crashes = sorted(p.name for p in tmp_path.glob("crash-*"))
    assert done.returncode == 0, f"{name} harness exited {done.returncode}, {crashes}:\n{done.stderr[-4000:]}"
    assert "Done" in done.stderr, done.stderr[-2000:]
