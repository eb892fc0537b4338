"""A TCP port for a server a test starts and must name before it listens (a fake SMSC,
a `picasse api` on a given port, a NATS cluster's nodes). `picasse up` needs no such guess:
it binds the API's socket itself and holds it (runners/listening.py)."""

from __future__ import annotations

import random
import socket

# Below Linux's ephemeral range (32768 to 60999 by default): a port picked here is not
# handed to another process's outgoing connection or port-0 listener (an `up`'s API among
# them) in the moments before the test's server binds it.
QUIET_PORTS = range(20000, 32000)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now: one a server could listen on (with SO_REUSEADDR, as ours do)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(200):
        port = random.choice(QUIET_PORTS)
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on {host} in {QUIET_PORTS.start}-{QUIET_PORTS.stop - 1}")
