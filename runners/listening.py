"""The API's listening socket: bound once by `picasse up` and handed to every API child it
starts (restarts included), or bound by `picasse api` itself when it runs on its own.

`up` holds the socket for as long as it runs, so the port is never free between an API's
death and its restart (connections made meanwhile wait in the socket's queue and are
answered by the next API), and PICASSE_HTTP_PORT=0 needs no guess: the kernel picks a
port and it is ours from that moment on.
"""

from __future__ import annotations

import socket

from picasse.runners.settings import SettingsError

BACKLOG = 2048  # connections the kernel queues while the API is busy or restarting


def bind(host: str, port: int) -> socket.socket:
    """A socket listening on host:port (port 0: any free one); a busy port is one clear error.

    Not inheritable (Python's default): it reaches only the children it is passed to.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelt out: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it every response on a kept-alive connection waits 40 ms for a delayed ACK.
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(BACKLOG)
    except OSError as error:
        listener.close()
        raise SettingsError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    return listener


def inherited(descriptor: int) -> socket.socket:
    """The listening socket `up` handed this process as `descriptor` (PICASSE_HTTP_LISTEN_FD)."""
    try:
        # Family, type and protocol are read from the socket itself (IPPROTO_TCP included).
        listener = socket.socket(fileno=descriptor)
    except OSError as error:
        raise SettingsError(
            f"PICASSE_HTTP_LISTEN_FD={descriptor} is no socket of this process: {error.strerror}"
        ) from None
    if listener.type != socket.SOCK_STREAM or not listener.getsockopt(
        socket.SOL_SOCKET, socket.SO_ACCEPTCONN
    ):
        listener.detach()  # not ours to close
        raise SettingsError(f"PICASSE_HTTP_LISTEN_FD={descriptor} is no listening TCP socket")
    return listener


def address(listener: socket.socket) -> str:
    """host:port where it listens ([host]:port for IPv6)."""
    host, port = listener.getsockname()[:2]
    return f"[{host}]:{port}" if listener.family == socket.AF_INET6 else f"{host}:{port}"


def port_of(listener: socket.socket) -> int:
    return int(listener.getsockname()[1])
