"""`picasse sites …` and `picasse geofences …`: a customer's sites (premises) and their
geofences, for operators on the command line."""

from __future__ import annotations

import argparse
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import msgspec

from picasse.domain.errors import InvalidInput
from picasse.domain.sites import DEFAULT_DWELL, DEFAULT_HYSTERESIS_M, Sites
from picasse.runners.settings import Settings

if TYPE_CHECKING:  # attendance and geometry load numpy, shapely and pyproj: only when used
    from picasse.domain.attendance import Attendance
    from picasse.domain.geofences import Shape


def open_sites(settings: Settings, database_url: str) -> Sites:
    from picasse.runners.wiring import clock_from, eventsourcing_env

    env = eventsourcing_env(database_url, settings.master_key_path, schema=settings.database_schema)
    return Sites(env, clock=clock_from(settings))


def open_attendance(settings: Settings, database_url: str) -> Attendance:
    from picasse.adapters.postgres.store import shredder_of
    from picasse.domain.attendance import Attendance
    from picasse.domain.privacy import Privacy
    from picasse.runners.wiring import clock_from, eventsourcing_env

    env = eventsourcing_env(database_url, settings.master_key_path, schema=settings.database_schema)
    # Attendance owns the store; its Privacy (for withdrawals) shares it, so is made after.
    attendance = Attendance(env, clock=clock_from(settings), privacy=None)  # type: ignore[arg-type]  # set below
    attendance.privacy = Privacy(shredder=shredder_of, sharing=attendance)
    return attendance


def _attendance(settings: Settings) -> AbstractContextManager[Attendance]:
    from picasse.runners.cli import _opened

    return _opened(open_attendance, settings)


def _shape(args: argparse.Namespace) -> Shape:
    from picasse.domain.geofences import Circle, Polygon

    if args.polygon is not None:
        if args.circle is not None:
            raise InvalidInput("give --circle or --polygon, not both", field="shape")
        try:
            return msgspec.json.decode(args.polygon, type=Polygon)
        except msgspec.DecodeError:
            raise InvalidInput("--polygon: not a GeoJSON Polygon", field="shape") from None
    if args.circle is None:
        raise InvalidInput("give --circle LAT,LON,RADIUS_M or --polygon GEOJSON", field="shape")
    try:
        lat, lon, radius = (float(part) for part in args.circle.split(","))
    except ValueError:
        raise InvalidInput(
            "--circle: LAT,LON,RADIUS_M, e.g. 52.37,4.89,100", field="shape"
        ) from None
    return Circle(lat=lat, lon=lon, radius_m=radius)


def cmd_geofences_add(args: argparse.Namespace, settings: Settings) -> int:
    with _attendance(settings) as attendance:
        print(
            attendance.add_fence(
                args.customer, args.site, args.name, _shape(args),
                hysteresis_m=args.hysteresis_m, dwell_seconds=args.dwell_seconds,
            )
        )  # fmt: skip
    return 0


def cmd_geofences_list(args: argparse.Namespace, settings: Settings) -> int:
    from picasse.domain.geofences import Circle
    from picasse.runners.cli import _json, _out, _table

    with _attendance(settings) as attendance:
        found = attendance.fences(args.customer, args.site)
    if args.json:
        _json(found)
        return 0
    table = _table("id", "site", "name", "shape", "hysteresis", "dwell", ids=("id", "site"))
    for f in found:
        shape = (
            f"circle {f.shape.lat},{f.shape.lon} r={f.shape.radius_m:g} m"
            if isinstance(f.shape, Circle)
            else f"polygon of {len(f.shape.coordinates[0]) - 1} corners"
        )
        table.add_row(
            str(f.id),
            str(f.site_id),
            f.name,
            shape,
            f"{f.hysteresis_m:g} m",
            f"{f.dwell_seconds} s",
        )
    _out().print(table)
    return 0


def cmd_geofences_remove(args: argparse.Namespace, settings: Settings) -> int:
    with _attendance(settings) as attendance:
        attendance.remove_fence(args.customer, args.geofence)
    return 0


def _sites(settings: Settings) -> AbstractContextManager[Sites]:
    from picasse.runners.cli import _opened

    return _opened(open_sites, settings)


def cmd_sites_add(args: argparse.Namespace, settings: Settings) -> int:
    with _sites(settings) as sites:
        print(sites.add(args.customer, args.name, args.address))
    return 0


def cmd_sites_list(args: argparse.Namespace, settings: Settings) -> int:
    from picasse.runners.cli import _json, _out, _table

    with _sites(settings) as sites:
        found = sites.sites(args.customer)
    if args.json:
        _json(found)
        return 0
    table = _table("id", "name", "address")
    for s in found:
        table.add_row(str(s.id), s.name or "[erased]", s.address or "[erased]")
    _out().print(table)
    return 0


def cmd_sites_remove(args: argparse.Namespace, settings: Settings) -> int:
    with _sites(settings) as sites:
        sites.remove(args.customer, args.site)
    return 0


def add_commands(commands: Any, uuid: Any) -> None:
    """`picasse sites add/list/remove`, on the top-level parser's subcommands."""
    sites = commands.add_parser("sites", help="a customer's sites (premises)").add_subparsers(
        title="site commands", metavar="COMMAND", required=True
    )
    add = sites.add_parser("add", help="add a site to a customer; prints its id")
    add.add_argument("--customer", type=uuid, required=True, metavar="ID")
    add.add_argument("--name", required=True, help="what the site is called")
    add.add_argument("--address", required=True, help="its postal address, one line")
    add.set_defaults(run=cmd_sites_add)
    listed = sites.add_parser("list", help="a customer's sites: id, name, address")
    listed.add_argument("--customer", type=uuid, required=True, metavar="ID")
    listed.add_argument("--json", action="store_true", help="print JSON")
    listed.set_defaults(run=cmd_sites_list)
    remove = sites.add_parser("remove", help="remove a site (and what belongs to it)")
    remove.add_argument("--customer", type=uuid, required=True, metavar="ID")
    remove.add_argument("site", type=uuid, metavar="SITE", help="the site's id")
    remove.set_defaults(run=cmd_sites_remove)
    from picasse.runners.visitors_cli import add_registration_command

    add_registration_command(sites, uuid)

    fences = commands.add_parser(
        "geofences", help="a customer's geofences (attendance)"
    ).add_subparsers(title="geofence commands", metavar="COMMAND", required=True)
    add = fences.add_parser(
        "add",
        help="add a circle or a GeoJSON polygon to a site; prints its id",
        description="Give --circle LAT,LON,RADIUS_M or --polygon with a GeoJSON Polygon.",
    )
    add.add_argument("--customer", type=uuid, required=True, metavar="ID")
    add.add_argument("--site", type=uuid, required=True, metavar="ID", help="the site's id")
    add.add_argument("--name", required=True, help="what the geofence is called")
    add.add_argument("--circle", metavar="LAT,LON,RADIUS_M", help="a circle, e.g. 52.37,4.89,100")
    add.add_argument("--polygon", metavar="GEOJSON", help='{"type": "Polygon", "coordinates": …}')
    add.add_argument(
        "--hysteresis-m", type=float, default=DEFAULT_HYSTERESIS_M, metavar="M",
        help="half the band between inner and outer boundary (default %(default)s)",
    )  # fmt: skip
    add.add_argument(
        "--dwell-seconds", type=int, default=int(DEFAULT_DWELL.total_seconds()), metavar="S",
        help="how long a change must hold before it counts (default %(default)s)",
    )  # fmt: skip
    add.set_defaults(run=cmd_geofences_add)
    listed = fences.add_parser("list", help="a customer's geofences, of one site or all")
    listed.add_argument("--customer", type=uuid, required=True, metavar="ID")
    listed.add_argument("--site", type=uuid, metavar="ID", help="only this site's")
    listed.add_argument("--json", action="store_true", help="print JSON")
    listed.set_defaults(run=cmd_geofences_list)
    remove = fences.add_parser("remove", help="remove a geofence")
    remove.add_argument("--customer", type=uuid, required=True, metavar="ID")
    remove.add_argument("geofence", type=uuid, metavar="GEOFENCE", help="the geofence's id")
    remove.set_defaults(run=cmd_geofences_remove)
