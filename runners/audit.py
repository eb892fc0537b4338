"""`picasse audit replay`: replays the log into scratch views and compares them with the live ones."""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime, time, timedelta
from uuid import UUID

import msgspec
from eventsourcing.persistence import MapperDeserialisationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from picasse.adapters.postgres.audit import AuditCannotRun, ReplayReport, Scope, audit_replay
from picasse.runners import servers
from picasse.runners.project import VIEWS, LogReader, view_env
from picasse.runners.settings import Settings
from picasse.runners.signals import stop_interrupts

EXIT_MISMATCH = 1
EXIT_CANNOT_RUN = 3


class _EventsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} events/s" if speed else "", style="progress.data.speed")


def replay_main(
    settings: Settings,
    customer: UUID | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    as_json: bool = False,
) -> int:
    """Run the audit; 0 when the views equal the replay, 1 on any mismatch, on an event that
    no longer decodes, or with nothing to compare for the customer asked about; 3 when it
    cannot run here. Settings, master key and database errors are left to the caller, which
    turns them into exit 3 too."""
    scope = Scope(customer, _aware(start), _aware(end))
    err = Console(stderr=True, highlight=False)
    try:
        with stop_interrupts():
            report = _replay(settings, scope, err)
    except AuditCannotRun as error:
        _reason(str(error))
        return EXIT_CANNOT_RUN
    except MapperDeserialisationError as error:  # a sealed value that no longer opens
        _reason(f"the log does not replay: {error}")
        return EXIT_MISMATCH
    if as_json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        _print_summary(report, Console(highlight=False, soft_wrap=True, markup=False))
    if not report.ok:
        first = report.mismatches[0]
        where = f"{first.view} {first.table} row {first.row}"
        if first.column is not None:
            what = f"column {first.column}"
        elif first.live == "missing":
            what = "missing from the live view"
        else:
            what = "not in the replay"
        _reason(
            f"{report.mismatch_count} mismatch{'es' if report.mismatch_count != 1 else ''}"
            f" between the live views and a replay of the log (first: {where}, {what})"
        )
        return EXIT_MISMATCH
    if scope.customer is not None and not any(t.rows for t in report.tables):
        _reason(f"customer {scope.customer}: no rows in the live views or the replay to compare")
        return EXIT_MISMATCH
    return 0


def period(first: date | None, last: date | None) -> tuple[datetime | None, datetime | None]:
    """The days `first` to `last`, both included, as [start, end) in UTC."""
    start = datetime.combine(first, time.min, UTC) if first is not None else None
    end = datetime.combine(last, time.min, UTC) + timedelta(days=1) if last is not None else None
    return start, end


def _replay(settings: Settings, scope: Scope, err: Console) -> ReplayReport:
    database_url = servers.postgres_url(settings)
    reader = LogReader(view_env(settings, database_url))
    try:
        with Progress(
            TextColumn("replaying the log"),
            BarColumn(),
            MofNCompleteColumn(),
            _EventsPerSecond(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=not err.is_terminal,  # no stray blank line in a log or a pipe
        ) as bar:
            task = bar.add_task("replay", total=None)
            return audit_replay(
                reader.recorder,
                reader.mapper,
                reader.name,
                VIEWS,
                scope,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    finally:
        reader.close()


def _print_summary(report: ReplayReport, out: Console) -> None:
    rate = report.events / report.replay_seconds if report.replay_seconds else 0.0
    at = ", ".join(f"{name} at {position:,}" for name, position in report.positions.items())
    out.print(
        f"replayed {report.events:,} events in {report.replay_seconds:.1f}s ({rate:,.0f} events/s);"
        f" views compared at their positions ({at}; the log's head is {report.head:,})"
    )
    for view in report.positions:
        tables = [t for t in report.tables if t.view == view]
        counted = ", ".join(f"{t.table} {t.rows:,}" for t in tables)
        mismatches = sum(t.mismatches for t in tables)
        out.print(f"{view}: rows compared: {counted}; mismatches: {mismatches:,}")
    out.print(
        f"erased: {report.erased_values:,} values read as erased while replaying (their keys"
        f" destroyed); {report.erased_columns:,} personal fields erased in the rows compared"
    )
    if report.ok:
        out.print("ok: the live views equal a replay of the log")
        return
    table = Table("view", "table", "row", "column", "live", "replayed", title="mismatches")
    for m in report.mismatches:
        table.add_row(m.view, m.table, m.row, m.column or "(whole row)", m.live, m.replayed)
    out.print(table)
    if report.mismatch_count > len(report.mismatches):
        out.print(f"… and {report.mismatch_count - len(report.mismatches):,} more")
    out.print(
        "values are not shown: 'set' means a value is there, 'erased' that the view holds no"
        " personal data there"
    )


def _reason(message: str) -> None:
    sys.stderr.write(f"picasse: {' '.join(message.split())}\n")


def _aware(moment: datetime | None) -> datetime | None:
    """A time without a zone is taken as UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment
