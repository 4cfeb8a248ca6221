"""The splice relay's pipes within the service user's pipe budget (fs.pipe-user-pages-soft)."""

from __future__ import annotations

import fcntl

from rdpbalancer.relay.splice import F_GETPIPE_SZ, PAGE, PIPE_SIZE, SMALL_PIPE_SIZE, PipePool


def test_pipes_are_1_mib_while_the_budget_allows_then_64_kib() -> None:
    pool = PipePool(page_budget=2 * PIPE_SIZE // PAGE + 10)
    pipes = [pool.get() for _ in range(4)]
    sizes = [fcntl.fcntl(w, F_GETPIPE_SZ) for _r, w in pipes]
    assert sizes == [PIPE_SIZE, PIPE_SIZE, SMALL_PIPE_SIZE, SMALL_PIPE_SIZE]
    assert pool.pages == (2 * PIPE_SIZE + 2 * SMALL_PIPE_SIZE) // PAGE
    for pipe in pipes:
        pool.put(pipe)  # over budget: closed rather than kept idle
    assert pool.pages <= pool.page_budget  # type: ignore[operator]
    pool.close()
    assert pool.pages == 0


def test_without_a_budget_every_pipe_is_1_mib() -> None:
    pool = PipePool(page_budget=None)
    pipes = [pool.get() for _ in range(3)]
    assert {fcntl.fcntl(w, F_GETPIPE_SZ) for _r, w in pipes} == {PIPE_SIZE}
    for pipe in pipes:
        pool.discard(pipe)
    assert pool.pages == 0
