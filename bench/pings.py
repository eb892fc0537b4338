"""Location pings: the batched API → events → enter/exit pipeline with 1,000 geofences, beside
a naive check of each ping against every fence, measured in the same run.

Ours: `POST /v1/location/pings` of the real app (in this process, through Litestar's ASGI
test client: routing, the API key, decoding, the domain, sealing under daily keys, the
event store on PostgreSQL), batches of 1,000 pings of walking users, with the fences behind
the STRtree of `FenceIndex`. The baseline: the same pings, one by one, measured against
every fence (geodesic distance to each circle, the projected test of each polygon), with
no store at all. Goals: at least 10,000 pings/s, and at least 5x the baseline.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import numpy as np
from litestar.testing import TestClient
from rich.console import Console
from rich.table import Table

from bench import event_store
from picasse.adapters.clock import ManualClock
from picasse.adapters.http.app import create_app
from picasse.adapters.master_key import create_master_key
from picasse.domain.access import Viewer
from picasse.domain.accounts import Accounts
from picasse.domain.geofences import GEOD, Circle, Fence, MeasuredFence, Polygon, Shape, Verdict
from picasse.domain.values import Role
from picasse.runners import servers
from picasse.runners.api import http_deps
from picasse.runners.settings import Settings

GOAL_RATE = 10_000.0
GOAL_RATIO = 5.0
AREA = (52.0, 4.0)  # the south-west corner of a 30 x 30 km region with the fences
START = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Config:
    fences: int = 1000
    users: int = 10
    batches: int = 3  # per user
    batch_size: int = 1000
    baseline_pings: int = 300


@dataclass
class Results:
    pings: int = 0
    seconds: float = 0.0
    crossings: int = 0
    baseline_pings: int = 0
    baseline_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.pings / self.seconds if self.seconds else 0.0

    @property
    def baseline_rate(self) -> float:
        return self.baseline_pings / self.baseline_seconds if self.baseline_seconds else 0.0


def _at(north_m: float, east_m: float) -> tuple[float, float]:
    lon, lat, _ = GEOD.fwd(AREA[1], AREA[0], 0, north_m)
    lon, lat, _ = GEOD.fwd(lon, lat, 90, east_m)
    return lat, lon


def _shapes(count: int, rng: random.Random) -> list[Shape]:
    """Circles and octagons of 40-150 m on a grid over the region."""
    side = int(np.ceil(np.sqrt(count)))
    shapes: list[Shape] = []
    for i in range(count):
        lat, lon = _at(500 + (i // side) * 30_000 / side, 500 + (i % side) * 30_000 / side)
        size = rng.uniform(40, 150)
        if i % 2:
            shapes.append(Circle(lat=lat, lon=lon, radius_m=size))
            continue
        ring = [list(GEOD.fwd(lon, lat, b, size)[:2]) for b in range(0, 360, 45)]
        shapes.append(Polygon(coordinates=[[*ring, ring[0]]]))
    return shapes


def _track(shapes: list[Shape], pings: int, rng: random.Random) -> list[tuple[float, float]]:
    """A walk from fence to fence (1.5 m/s, a ping each 5 s), with GPS noise."""
    points: list[tuple[float, float]] = []
    target = rng.randrange(len(shapes))
    lat, lon = _centre(shapes[target])
    while len(points) < pings:
        target = (target + rng.choice([1, -1])) % len(shapes)
        goal_lat, goal_lon = _centre(shapes[target])
        heading, _, distance = GEOD.inv(lon, lat, goal_lon, goal_lat)
        for _ in range(int(distance / 7.5) + 1):
            lon, lat, _ = GEOD.fwd(lon, lat, heading, 7.5)
            noisy_lon, noisy_lat, _ = GEOD.fwd(lon, lat, rng.uniform(0, 360), rng.uniform(0, 8))
            points.append((noisy_lat, noisy_lon))
        for _ in range(30):  # five minutes there
            points.append((lat, lon))
    return points[:pings]


def _centre(shape: Shape) -> tuple[float, float]:
    if isinstance(shape, Circle):
        return shape.lat, shape.lon
    ring = shape.coordinates[0][:-1]
    return sum(p[1] for p in ring) / len(ring), sum(p[0] for p in ring) / len(ring)


def run(settings: Settings, database_url: str, config: Config, console: Console) -> Results:
    create_master_key(settings.master_key_path)
    rng = random.Random(13)
    results = Results()
    clock = ManualClock(START + timedelta(days=1))
    with event_store.fresh_schema(database_url, "pings") as schema:
        here = Settings(
            data_dir=settings.data_dir, database_url=database_url, database_schema=schema,
            master_key_file=settings.master_key_path,
        )  # fmt: skip
        with http_deps(here, database_url, clock=clock) as deps:
            assert deps.attendance is not None
            attendance = deps.attendance
            customer = deps.accounts.register_customer(
                organisation="Bench BV", contact_name="Bench", email="bench@bench.example",
                phone="+31612345678", billing_address="Benchweg 1",
            )  # fmt: skip
            deps.accounts.start_subscription(customer)
            admin = _user(deps.accounts, customer, "bench-admin", Role.CUSTOMER_ADMIN)
            key = deps.api_keys.issue(user_id=admin, customer_id=customer, scopes=["location"])
            attendance.switch(customer, True)
            site = attendance.sites.add(customer, "Region", "Benchweg 1")
            shapes = _shapes(config.fences, rng)
            with console.status(f"adding {config.fences} geofences"):
                for n, shape in enumerate(shapes):
                    attendance.add_fence(customer, site, f"fence {n}", shape)
            users: list[UUID] = []
            for n in range(config.users):
                user = _user(deps.accounts, customer, f"walker-{n}", Role.CUSTOMER_USER)
                attendance.give_consent(customer, user)
                users.append(user)
            per_user = config.batches * config.batch_size
            tracks = {u: _track(shapes, per_user, rng) for u in users}
            batches = [
                (u, b) for b in range(config.batches) for u in users
            ]  # each user's batches in order, users interleaved
            app = create_app(deps)
            headers = {"Authorization": f"Bearer {key.key}"}
            bodies = []
            for user, b in batches:
                part = tracks[user][b * config.batch_size : (b + 1) * config.batch_size]
                first = START + timedelta(seconds=5 * b * config.batch_size)
                bodies.append(
                    {
                        "pings": [
                            {
                                "user_id": str(user),
                                "at": (first + timedelta(seconds=5 * i)).isoformat(),
                                "lat": lat,
                                "lon": lon,
                                "accuracy_m": 8.0,
                            }
                            for i, (lat, lon) in enumerate(part)
                        ]
                    }
                )
            with TestClient(app) as client, console.status("sending batches of pings"):
                client.post("/v1/location/pings", json=bodies[0], headers=headers)  # warm up
                started = time.perf_counter()
                for body in bodies[1:]:
                    answer = client.post("/v1/location/pings", json=body, headers=headers)
                    if answer.status_code != 202:
                        raise RuntimeError(f"pings refused: {answer.status_code} {answer.text}")
                    results.crossings += answer.json()["crossings"]
                results.seconds = time.perf_counter() - started
                results.pings = sum(len(b["pings"]) for b in bodies[1:])
            with console.status("the naive baseline"):
                _baseline(shapes, tracks[users[0]][: config.baseline_pings], results)
    return results


def _user(accounts: Accounts, customer: UUID, login: str, role: Role) -> UUID:
    """A user of the customer, invited by its admin and following the link at once."""
    link = accounts.invite_user(
        customer_id=customer, login=login, role=role, email=f"{login}@bench.example",
        by=Viewer(role=Role.CUSTOMER_ADMIN, customer_id=customer),
    )  # fmt: skip
    return accounts.set_password_with_link(link.token, "a long bench password, not guessed")


def _baseline(shapes: list[Shape], track: list[tuple[float, float]], results: Results) -> None:
    """Each ping against every fence, one at a time: the distance and the verdict."""
    import uuid

    fences = [
        MeasuredFence(Fence(id=uuid.uuid4(), site_id=uuid.uuid4(), name="f", shape=s))
        for s in shapes
    ]
    inside = 0
    started = time.perf_counter()
    for lat, lon in track:
        lats, lons, accuracy = np.array([lat]), np.array([lon]), np.array([8.0])
        for fence in fences:
            if fence.verdicts(lats, lons, accuracy)[0] is Verdict.INSIDE:
                inside += 1
    results.baseline_seconds = time.perf_counter() - started
    results.baseline_pings = len(track)


def table(results: Results, config: Config) -> Table:
    out = Table(title=f"location pings, {config.fences} geofences, batches of {config.batch_size}")
    out.add_column("pipeline")
    out.add_column("pings", justify="right")
    out.add_column("pings/s", justify="right")
    out.add_row(
        "naive: each ping against every fence, no store", str(results.baseline_pings),
        f"{results.baseline_rate:,.0f}",
    )  # fmt: skip
    out.add_row(
        "ours: API → sealed events → STRtree → enter/exit", str(results.pings),
        f"{results.rate:,.0f}",
    )  # fmt: skip
    ratio = results.rate / results.baseline_rate if results.baseline_rate else 0.0
    met = results.rate >= GOAL_RATE and ratio >= GOAL_RATIO
    verdict = "[green]met" if met else "[red]not met"
    out.caption = (
        f"{ratio:.1f}x the baseline, {results.crossings} entries and exits;"
        f" goal >= {GOAL_RATE:,.0f} pings/s and >= {GOAL_RATIO:.0f}x: {verdict}"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    defaults = Config()
    parser = argparse.ArgumentParser(prog="python -m bench.pings", description=__doc__)
    parser.add_argument("--fences", type=int, default=defaults.fences)
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--batches", type=int, default=defaults.batches, help="per user")
    args = parser.parse_args(argv)
    config = Config(fences=args.fences, users=args.users, batches=args.batches)
    console = Console()
    data_dir = Path(tempfile.mkdtemp(prefix="picasse-bench-"))
    settings = Settings(data_dir=data_dir, database_url=Settings.from_environ().database_url)
    try:
        database_url = servers.postgres_url(settings)
        console.print(table(run(settings, database_url, config, console), config))
    finally:
        servers.stop_postgres(settings)
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
