"""Simulated walks (issue 13): tracks with GPS noise (hypothesis) cross circle and polygon
fences, one across the antimeridian and one at 78° N. Entries and exits match the crossings
of the noise-free track, within the dwell time, and nothing flaps."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from picasse.domain.geofences import (
    GEOD,
    Circle,
    Fence,
    FenceIndex,
    FenceState,
    MeasuredFence,
    Polygon,
    Shape,
    follow,
)

PLACES = {
    "utrecht": (52.09, 5.12),
    "antimeridian": (-16.5, 179.9995),  # Fiji: the fence spans ±180°
    "svalbard": (78.22, 15.65),
}
START = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
EVERY = timedelta(seconds=5)
SPEED = 1.4  # m/s, walking
ACCURACY = 15.0  # what every ping reports; its noise lies within it


def _shape(kind: str, lat: float, lon: float) -> Shape:
    if kind == "circle":
        return Circle(lat=lat, lon=lon, radius_m=200.0)
    ring = []
    for bearing in range(0, 360, 45):  # an octagon of "radius" 180-260 m
        reach = 180.0 if bearing % 90 else 260.0
        x, y, _ = GEOD.fwd(lon, lat, bearing, reach)
        ring.append([((x + 180) % 360) - 180, y])
    return Polygon(coordinates=[[*ring, ring[0]]])


def _walk(lat: float, lon: float, bearing: float, passes: int) -> list[tuple[float, float]]:
    """Out and back through the centre: 600 m beyond it each way, `passes` times."""
    start_lon, start_lat, _ = GEOD.fwd(lon, lat, bearing + 180, 600)
    legs = []
    for n in range(passes):
        legs.append(bearing if n % 2 == 0 else bearing + 180)
    points = [(start_lat, start_lon)]
    step = SPEED * EVERY.total_seconds()
    here_lon, here_lat = start_lon, start_lat
    for leg in legs:
        heading = GEOD.inv(here_lon, here_lat, lon, lat)[0]
        for _ in range(int(1200 / step)):
            here_lon, here_lat, back = GEOD.fwd(here_lon, here_lat, heading, step)
            heading = back + 180
            points.append((here_lat, here_lon))
        del leg
    return points


@pytest.mark.parametrize("place", sorted(PLACES))
@pytest.mark.parametrize("kind", ["circle", "polygon"])
@settings(max_examples=8, deadline=None)
@given(
    bearing=st.floats(0, 359.9),
    seed=st.integers(0, 2**32 - 1),
    passes=st.integers(1, 3),
)
def test_a_noisy_walk_enters_and_exits_where_the_clean_track_crosses_and_never_flaps(
    place: str, kind: str, bearing: float, seed: int, passes: int
) -> None:
    lat, lon = PLACES[place]
    fence = Fence(id=uuid4(), site_id=uuid4(), name="yard", shape=_shape(kind, lat, lon))
    dwell = timedelta(seconds=fence.dwell_seconds)
    clean = _walk(lat, lon, bearing, passes)
    times = [START + i * EVERY for i in range(len(clean))]
    lats, lons = np.array([p[0] for p in clean]), np.array([p[1] for p in clean])

    truth = MeasuredFence(fence).signed_distances(lats, lons)
    crossings_clean = [
        (times[i], truth[i] < 0)
        for i in range(1, len(truth))
        if (truth[i] < 0) != (truth[i - 1] < 0)
    ]
    assert len(crossings_clean) == 2 * passes  # the walk does cross, in and out

    noise = random.Random(seed)
    noisy_lons, noisy_lats, _ = GEOD.fwd(
        lons,
        lats,
        np.array([noise.uniform(0, 360) for _ in clean]),
        np.array([noise.uniform(0, 0.95 * ACCURACY) for _ in clean]),
    )
    index = FenceIndex([fence])
    accuracy = np.full(len(clean), ACCURACY)
    # In batches of 50, as an app uploads them: state carries over between batches.
    states: dict[UUID, FenceState] = {}
    found = []
    for start in range(0, len(clean), 50):
        part = slice(start, start + 50)
        states, crossings = follow(
            index, states, times[part], np.asarray(noisy_lats)[part],
            ((np.asarray(noisy_lons)[part] + 180) % 360) - 180, accuracy[part],
        )  # fmt: skip
        found += crossings

    assert [c.entered for c in found] == [inside for _, inside in crossings_clean]
    for crossing, (at, _) in zip(found, crossings_clean, strict=True):
        assert timedelta(0) <= crossing.at - at + EVERY <= dwell
