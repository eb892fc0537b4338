"""`python -m bench.cluster`: what keeping the jobs on three nodes costs. Raw JetStream
publish+pull+ack of our job format on one embedded server with streams at one replica,
beside a three-node cluster on 127.0.0.1 with three (docs/scaling.md). Run by hand; not
part of `make bench`.

As `bench/messaging.py`'s baseline: jobs published with `publish_async` (answers gathered
per 500, with Nats-Msg-Id) while a pull consumer fetches 32 at a time and acks each.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid
from contextlib import suppress
from pathlib import Path

import nats
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import FetchTimeoutError, NotFoundError

from picasse.adapters.nats.jobs import Deliver, Topology, encoder, ensure_stream
from picasse.runners import servers
from picasse.runners.settings import Settings, nats_servers
from tests.integration.nats_cluster import nats_cluster

JOBS = 10_000
RUNS = 3
FETCH = 32


async def raw_rate(url: str, topology: Topology) -> float:
    publisher = await nats.connect(nats_servers(url), name="bench-cluster-publisher")
    consumer = await nats.connect(nats_servers(url), name="bench-cluster-consumer")
    try:
        js = publisher.jetstream()
        await ensure_stream(js, topology)
        subscription = await consumer.jetstream().pull_subscribe(
            topology.subjects,
            durable=topology.durable,
            stream=topology.stream,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=FETCH * 20),
        )
        jobs = [Deliver(uuid.uuid4(), uuid.uuid4(), "sms") for _ in range(JOBS)]
        payloads = [(topology.subject_of(job), encoder.encode(job)) for job in jobs]

        async def publish() -> None:
            pending = []
            for number, (subject, payload) in enumerate(payloads):
                message_id = f"{topology.namespace}/{number}"
                pending.append(
                    await js.publish_async(subject, payload, headers={"Nats-Msg-Id": message_id})
                )
                if len(pending) == 500:
                    await asyncio.gather(*pending)
                    pending = []
            await asyncio.gather(*pending)

        async def consume() -> None:
            acked = 0
            while acked < JOBS:
                try:
                    batch = await subscription.fetch(FETCH, timeout=0.5)
                except (FetchTimeoutError, TimeoutError):
                    continue
                await asyncio.gather(*(msg.ack() for msg in batch))
                acked += len(batch)

        started = time.perf_counter()
        await asyncio.gather(publish(), consume())
        elapsed = time.perf_counter() - started
    finally:
        with suppress(NotFoundError):
            await publisher.jetstream().delete_stream(topology.stream)
        await publisher.close()
        await consumer.close()
    return JOBS / elapsed


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    single = Settings(data_dir=root / "single")
    try:
        single_url = servers.nats_url(single)
        with nats_cluster(root / "cluster") as cluster:
            for run in range(1, RUNS + 1):
                one = asyncio.run(raw_rate(single_url, Topology(f"benchone{run}", 1)))
                three = asyncio.run(raw_rate(cluster.url, Topology(f"benchthree{run}", 3)))
                print(
                    f"run {run}: one server, R1 {one:>7,.0f} msgs/s;"
                    f" three-node cluster, R3 {three:>7,.0f} msgs/s; R3/R1 {three / one:.2f}",
                    flush=True,
                )
        print(f"1-minute load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        servers.stop_nats(single)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
