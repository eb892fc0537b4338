"""A TCP port for a server a test starts and must name before it listens: the product's
own choice of "any free port" (runners/servers.py `free_port`, below the ephemeral range)."""

from __future__ import annotations

from picasse.runners.servers import free_port

__all__ = ["free_port"]
