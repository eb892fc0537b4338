"""Geofences and presence: where a fence's boundary lies, and when a track entered or left it.

Geometry is geodesic. A circle's distance is measured on the WGS84 ellipsoid
(`pyproj.Geod`); a polygon is tested in an azimuthal equidistant projection centred on it
(pyproj), where shapely's planar tests hold to centimetres over a site's extent, on either
side of the antimeridian and near the poles alike.

Presence does not flap: a fence has an inner and an outer boundary (its edge minus and
plus its hysteresis margin); a ping counts as inside only when its whole accuracy circle
lies within the inner boundary, as outside only when it lies wholly beyond the outer
one, and a change is recorded only once it has held for the fence's dwell time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import msgspec

from picasse.domain.errors import InvalidInput
from picasse.domain.sites import DEFAULT_DWELL, DEFAULT_HYSTERESIS_M

# numpy, shapely and pyproj (~0.15 s to import) are imported where geometry is measured:
# every process that imports the attendance application (the API, the GDPR commands) would
# otherwise load them, and most never measure a fence.
if TYPE_CHECKING:
    import numpy as np
    from pyproj import Geod


@cache
def _geod() -> Geod:
    """The WGS84 ellipsoid (`GEOD`)."""
    from pyproj import Geod

    return Geod(ellps="WGS84")


def __getattr__(name: str) -> Any:
    if name == "GEOD":
        return _geod()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


MAX_RADIUS_M = 50_000.0
MAX_VERTICES = 1000
METRES_PER_DEGREE = 111_320.0


class Circle(msgspec.Struct, frozen=True, tag="circle"):
    lat: Annotated[float, msgspec.Meta(ge=-90, le=90, description="the centre's latitude")]
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180, description="the centre's longitude")]
    radius_m: Annotated[float, msgspec.Meta(gt=0, description="the radius in metres")]


class Polygon(msgspec.Struct, frozen=True, tag="Polygon"):
    """A GeoJSON Polygon (RFC 7946): its outer ring, then holes, each [lon, lat] pairs."""

    coordinates: Annotated[
        list[list[list[float]]],
        msgspec.Meta(description="GeoJSON: rings of [longitude, latitude], first and last equal"),
    ]


Shape = Circle | Polygon


class Verdict(StrEnum):
    INSIDE = "inside"  # the whole accuracy circle within the inner boundary
    OUTSIDE = "outside"  # the whole accuracy circle beyond the outer boundary
    UNSURE = "unsure"  # it crosses the band between them: changes nothing


def check_shape(shape: Shape) -> Shape:
    """The shape, if it is one we can measure; InvalidInput naming `shape` if not."""
    if isinstance(shape, Circle):
        if not (-90 <= shape.lat <= 90 and -180 <= shape.lon <= 180):
            raise InvalidInput("shape: the centre is not a latitude and longitude", field="shape")
        if not 0 < shape.radius_m <= MAX_RADIUS_M:
            raise InvalidInput(f"shape: a radius of 0 to {MAX_RADIUS_M:.0f} m", field="shape")
        return shape
    rings = shape.coordinates
    if not rings or any(len(ring) < 4 or ring[0] != ring[-1] for ring in rings):
        raise InvalidInput(
            "shape: each ring needs 4 or more positions, its last equal to its first",
            field="shape",
        )
    if sum(len(ring) for ring in rings) > MAX_VERTICES:
        raise InvalidInput(f"shape: at most {MAX_VERTICES} positions", field="shape")
    for ring in rings:
        for position in ring:
            if len(position) < 2 or not (-180 <= position[0] <= 180 and -90 <= position[1] <= 90):
                raise InvalidInput("shape: a position is not [longitude, latitude]", field="shape")
    planar = _ProjectedPolygon(shape)
    if not planar.polygon.is_valid or planar.polygon.area <= 0:
        raise InvalidInput("shape: the polygon crosses itself or has no area", field="shape")
    if planar.radius > MAX_RADIUS_M:
        raise InvalidInput(
            f"shape: a polygon within {MAX_RADIUS_M:.0f} m of its centre", field="shape"
        )
    return shape


def _centre(points: Iterable[tuple[float, float]]) -> tuple[float, float]:
    """The (lon, lat) of the mean of the points' unit vectors: right across ±180° too."""
    x = y = z = 0.0
    for lon, lat in points:
        la, lo = math.radians(lat), math.radians(lon)
        x += math.cos(la) * math.cos(lo)
        y += math.cos(la) * math.sin(lo)
        z += math.sin(la)
    return math.degrees(math.atan2(y, x)), math.degrees(math.atan2(z, math.hypot(x, y)))


class _ProjectedPolygon:
    """A polygon in the azimuthal equidistant projection centred on it (metres)."""

    def __init__(self, shape: Polygon) -> None:
        import shapely
        from pyproj import CRS, Transformer
        from shapely.geometry import Polygon as PlanarPolygon

        outer = shape.coordinates[0]
        self.lon0, self.lat0 = _centre((p[0], p[1]) for p in outer[:-1])
        crs = CRS.from_proj4(
            f"+proj=aeqd +lat_0={self.lat0} +lon_0={self.lon0} +datum=WGS84 +units=m"
        )
        self.to_plane = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        rings = [
            list(zip(*self.to_plane.transform([p[0] for p in r], [p[1] for p in r]), strict=True))
            for r in shape.coordinates
        ]
        self.polygon = PlanarPolygon(rings[0], rings[1:])
        shapely.prepare(self.polygon)
        self.boundary = self.polygon.boundary
        shapely.prepare(self.boundary)
        self.radius = max(math.hypot(x, y) for x, y in rings[0])

    def signed_distances(self, lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
        import numpy as np
        import shapely

        x, y = self.to_plane.transform(lons, lats)
        d = np.asarray(shapely.distance(self.boundary, shapely.points(x, y)), dtype=float)
        inside = np.asarray(shapely.contains_xy(self.polygon, x, y), dtype=bool)
        signed: np.ndarray = np.where(inside, -d, d)
        return signed


class Fence(msgspec.Struct, frozen=True, kw_only=True):
    """A geofence as stored: its shape, its site, and how presence in it is decided."""

    id: UUID
    site_id: UUID
    name: str
    shape: Shape
    hysteresis_m: float = DEFAULT_HYSTERESIS_M
    dwell_seconds: int = int(DEFAULT_DWELL.total_seconds())


class MeasuredFence:
    """A fence ready to measure: signed distances of points to its edge (negative inside)."""

    def __init__(self, fence: Fence) -> None:
        self.fence = fence
        self.dwell = timedelta(seconds=fence.dwell_seconds)
        shape = fence.shape
        self._planar: _ProjectedPolygon | None = None  # made when first needed (PROJ set-up)
        if isinstance(shape, Circle):
            self.lon0, self.lat0, self.reach = shape.lon, shape.lat, shape.radius_m
        else:
            outer = shape.coordinates[0][:-1]
            self.lon0, self.lat0 = _centre((p[0], p[1]) for p in outer)
            self.reach = max(_geod().inv(self.lon0, self.lat0, p[0], p[1])[2] for p in outer)

    def signed_distances(self, lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
        shape = self.fence.shape
        if isinstance(shape, Polygon):
            if self._planar is None:
                self._planar = _ProjectedPolygon(shape)
            return self._planar.signed_distances(lats, lons)
        import numpy as np

        n = len(lats)
        _, _, d = _geod().inv(np.full(n, self.lon0), np.full(n, self.lat0), lons, lats)
        return np.asarray(d) - shape.radius_m

    def verdicts(self, lats: np.ndarray, lons: np.ndarray, accuracy: np.ndarray) -> list[Verdict]:
        d = self.signed_distances(lats, lons)
        band = self.fence.hysteresis_m + accuracy
        return [
            Verdict.INSIDE if di <= -b else Verdict.OUTSIDE if di >= b else Verdict.UNSURE
            for di, b in zip(d.tolist(), band.tolist(), strict=True)
        ]

    def boxes(self, slack_m: float) -> list[tuple[float, float, float, float]]:
        """Lon/lat boxes holding everything within `slack_m` of the outer boundary (two
        where they cross ±180°; all longitudes near a pole)."""
        reach = self.reach + self.fence.hysteresis_m + slack_m
        dlat = reach / METRES_PER_DEGREE
        south, north = self.lat0 - dlat, self.lat0 + dlat
        if north >= 89.0 or south <= -89.0:
            return [(-180.0, max(south, -90.0), 180.0, min(north, 90.0))]
        cos = min(math.cos(math.radians(south)), math.cos(math.radians(north)))
        dlon = reach / (METRES_PER_DEGREE * max(cos, 1e-6))
        if dlon >= 180:
            return [(-180.0, south, 180.0, north)]
        west, east = self.lon0 - dlon, self.lon0 + dlon
        if west < -180:
            return [(west + 360, south, 180.0, north), (-180.0, south, east, north)]
        if east > 180:
            return [(west, south, 180.0, north), (-180.0, south, east - 360, north)]
        return [(west, south, east, north)]


class FenceIndex:
    """A customer's fences behind an STRtree of their lon/lat boxes: a ping is measured
    against the few fences its accuracy circle may reach, not against all of them."""

    def __init__(self, fences: Iterable[Fence]) -> None:
        import numpy as np
        from shapely import STRtree
        from shapely.geometry import box

        self.fences = [MeasuredFence(f) for f in fences]
        self.by_id = {m.fence.id: m for m in self.fences}
        owners: list[int] = []
        geometries = []
        for i, fence in enumerate(self.fences):
            for b in fence.boxes(1.0):  # a metre of slack for the boxes' own arithmetic
                geometries.append(box(*b))
                owners.append(i)
        self._owners = np.asarray(owners, dtype=np.int64)
        self._tree = STRtree(geometries) if geometries else None

    def near(
        self, lats: np.ndarray, lons: np.ndarray, accuracy: np.ndarray
    ) -> dict[UUID, np.ndarray]:
        """Per fence whose outer boundary a ping's accuracy circle may reach: the indexes of
        those pings. A ping near no fence lies wholly beyond every outer boundary."""
        import numpy as np
        import shapely

        if self._tree is None or len(lats) == 0:
            return {}
        dlat = accuracy / METRES_PER_DEGREE
        cos = np.maximum(np.cos(np.radians(np.minimum(np.abs(lats) + dlat, 90.0))), 1e-6)
        dlon = np.minimum(accuracy / (METRES_PER_DEGREE * cos), 180.0)
        south, north, west, east = lats - dlat, lats + dlat, lons - dlon, lons + dlon
        # A box over ±180° is asked about on both sides of it.
        which = np.arange(len(lats))
        over_west, over_east = west < -180, east > 180
        n_west, n_east = int(over_west.sum()), int(over_east.sum())
        boxes = shapely.box(
            np.concatenate(
                [np.maximum(west, -180), west[over_west] + 360, np.full(n_east, -180.0)]
            ),
            np.concatenate([south, south[over_west], south[over_east]]),
            np.concatenate([np.minimum(east, 180), np.full(n_west, 180.0), east[over_east] - 360]),
            np.concatenate([north, north[over_west], north[over_east]]),
        )
        point_of_box = np.concatenate([which, which[over_west], which[over_east]])
        found_boxes, hits = self._tree.query(boxes, predicate="intersects")
        found: dict[UUID, list[int]] = {}
        points = point_of_box[found_boxes]
        for point, hit in zip(points.tolist(), self._owners[hits].tolist(), strict=True):
            found.setdefault(self.fences[hit].fence.id, []).append(point)
        return {k: np.unique(np.asarray(v)) for k, v in found.items()}


class FenceState(msgspec.Struct, frozen=True):
    """A user's presence in one fence: in or out, and since when a change has been seen."""

    inside: bool = False
    changing_since: datetime | None = None  # first of an unbroken run of opposite verdicts


class Crossing(msgspec.Struct, frozen=True):
    fence_id: UUID
    entered: bool  # True: Entered, False: Exited
    at: datetime  # when the change was first seen


def step(
    state: FenceState, at: datetime, verdict: Verdict, dwell: timedelta
) -> tuple[FenceState, bool]:
    """The state after one ping (in time order), and whether it changed sides."""
    if verdict is Verdict.UNSURE:
        return state, False
    says_inside = verdict is Verdict.INSIDE
    if says_inside == state.inside:
        return (FenceState(state.inside) if state.changing_since else state), False
    since = state.changing_since or at
    if at - since >= dwell:
        return FenceState(says_inside, None), True
    return FenceState(state.inside, since), False


def follow(
    index: FenceIndex,
    states: dict[UUID, FenceState],
    times: Sequence[datetime],
    lats: np.ndarray,
    lons: np.ndarray,
    accuracy: np.ndarray,
) -> tuple[dict[UUID, FenceState], list[Crossing]]:
    """Pings (sorted by time) through every fence they are near, or the user is in or
    changing in: the new states (default ones left out) and the crossings, in time order."""
    near = index.near(lats, lons, accuracy)
    involved = set(near) | {f for f, s in states.items() if f in index.by_id and s != FenceState()}
    new_states = dict(states)
    crossings: list[Crossing] = []
    import numpy as np

    all_points = np.arange(len(times))
    for fence_id in involved:
        measured = index.by_id[fence_id]
        points = near.get(fence_id)
        verdicts = [Verdict.OUTSIDE] * len(times)  # far from its boxes: clearly outside
        if points is not None and len(points):
            chosen = all_points if len(points) == len(times) else points
            for i, v in zip(
                chosen.tolist(),
                measured.verdicts(lats[chosen], lons[chosen], accuracy[chosen]),
                strict=True,
            ):
                verdicts[i] = v
        state = states.get(fence_id, FenceState())
        for i, verdict in enumerate(verdicts):
            before = state
            state, changed = step(state, times[i], verdict, measured.dwell)
            if changed:
                since = before.changing_since or times[i]
                crossings.append(Crossing(fence_id, state.inside, since))
        if state == FenceState():
            new_states.pop(fence_id, None)
        else:
            new_states[fence_id] = state
    crossings.sort(key=lambda c: c.at)
    return new_states, crossings
