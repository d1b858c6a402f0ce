"""A local port for a Serve proxy that other processes are unlikely to take first."""

from __future__ import annotations

import random
import socket


def free_port(host: str = "127.0.0.1", low: int = 20000, high: int = 29999) -> int:
    """A port in [low, high] that binds now.

    Asking the OS for port 0 returns one from the ephemeral range (32768+ on Linux), where Ray's
    own processes and every outgoing connection also take ports: between choosing one and Serve's
    proxy binding it, another process did take it (a CI run failed with "Failed to bind to address
    127.0.0.1:41597"). The default range sits between Ray's worker ports (10002-19999) and Serve's
    direct-ingress ports (30000+). A port can still be taken after it is returned; callers retry.
    """
    ports = list(range(low, high + 1))
    random.SystemRandom().shuffle(ports)
    for port in ports[:200]:
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{high} on {host}; pass one explicitly")
