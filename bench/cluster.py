"""`python -m bench.cluster`: what keeping the jobs on three nodes costs. The messaging
bench's raw JetStream baseline (publish+pull+ack of our job format) on one embedded server
with streams at one replica, beside a three-node cluster on 127.0.0.1 with three
(docs/scaling.md). Run by hand; not part of `make bench`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

from bench.messaging import Config, raw_jetstream
from picasse.runners import servers
from picasse.runners.settings import Settings
from tests.integration.nats_cluster import nats_cluster

RUNS = 3
CONFIG = Config(baseline_messages=10_000)


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    single = Settings(data_dir=root / "single")
    try:
        single_url = servers.nats_url(single)
        with nats_cluster(root / "cluster") as cluster:
            for run in range(1, RUNS + 1):
                one = asyncio.run(raw_jetstream(single_url, f"one{run}", CONFIG, _ignore))
                three = asyncio.run(
                    raw_jetstream(cluster.url, f"three{run}", CONFIG, _ignore, replicas=3)
                )
                print(
                    f"run {run}: one server, R1 {one:>7,.0f} msgs/s;"
                    f" three-node cluster, R3 {three:>7,.0f} msgs/s; R3/R1 {three / one:.2f}",
                    flush=True,
                )
        print(f"1-minute load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        servers.stop_nats(single)
        shutil.rmtree(root, ignore_errors=True)


def _ignore(count: int) -> None:
    """No progress bar."""


if __name__ == "__main__":
    main()
