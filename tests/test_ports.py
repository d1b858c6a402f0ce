"""Local ports for a Serve proxy: below the ephemeral range, skipping ones already taken."""

from __future__ import annotations

import socket

import pytest

from serving.ports import free_port


def test_port_is_in_range_and_binds() -> None:
    port = free_port()
    assert 20000 <= port <= 29999
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_taken_ports_are_skipped_and_a_full_range_says_so() -> None:
    held = []
    try:
        base = free_port(low=24000, high=24900)
        for p in (base, base + 1):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                s.close()
                continue
            held.append(s)
        taken = [s.getsockname()[1] for s in held]
        if len(taken) < 2:
            pytest.skip("could not hold two neighbouring ports")
        lo, hi = taken[0], taken[1]
        with pytest.raises(RuntimeError, match=f"no free port in {lo}-{hi}"):
            free_port(low=lo, high=hi)
        # one taken, one free: the free one
        held.pop().close()
        assert free_port(low=lo, high=hi) == hi
    finally:
        for s in held:
            s.close()
