"""A TCP port for a server a test starts and must name before it listens."""

from __future__ import annotations

import random
import socket

# Below Linux's ephemeral range (32768 to 60999): a port picked here is not handed to some
# other process's outgoing connection or port-0 listener in the seconds before our
# server binds it, as a port picked by binding port 0 can be on a busy machine.
_QUIET_PORTS = range(20000, 32000)


def free_port() -> int:
    for _ in range(200):
        port = random.choice(_QUIET_PORTS)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")
