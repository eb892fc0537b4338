"""Builds the applications and their adapters from settings: the one place things get wired."""

from __future__ import annotations

from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from picasse.adapters.master_key import create_master_key, read_master_key
from picasse.adapters.passwords import Argon2Passwords
from picasse.adapters.pseudonyms import KeyedPseudonyms
from picasse.domain.accounts import Accounts
from picasse.runners.settings import Settings, SettingsError

STORE_MODULE = "picasse.adapters.postgres.store:Factory"


def eventsourcing_env(
    database_url: str, master_key_file: Path, *, schema: str = ""
) -> dict[str, str]:
    """The library's environment for our event store on the database at `database_url`."""
    try:
        params = conninfo_to_dict(database_url)
    except Exception as error:
        raise SettingsError(f"PICASSE_DATABASE_URL is not a PostgreSQL URL: {error}") from None
    env = {
        "PERSISTENCE_MODULE": STORE_MODULE,
        "POSTGRES_DBNAME": str(params.get("dbname") or "postgres"),
        "POSTGRES_HOST": str(params.get("host") or "127.0.0.1"),
        "POSTGRES_PORT": str(params.get("port") or "5432"),
        "POSTGRES_USER": str(params.get("user") or "postgres"),
        "POSTGRES_PASSWORD": str(params.get("password") or ""),
        "POSTGRES_POOL_SIZE": "4",
        "POSTGRES_MAX_OVERFLOW": "8",
        "POSTGRES_CONNECT_TIMEOUT": "10",
        "MASTER_KEY_FILE": str(master_key_file),
    }
    if schema:
        env["POSTGRES_SCHEMA"] = schema
    return env


def open_accounts(settings: Settings, database_url: str, *, schema: str | None = None) -> Accounts:
    master_key_file = settings.master_key_path
    return Accounts(
        eventsourcing_env(
            database_url,
            master_key_file,
            schema=settings.database_schema if schema is None else schema,
        ),
        passwords=Argon2Passwords(),
        pseudonyms=KeyedPseudonyms(read_master_key(master_key_file)),
    )


def ensure_master_key(settings: Settings) -> None:
    """First start: create the data dir and the master key file (idempotent)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    create_master_key(settings.master_key_path)


def prepare(settings: Settings, database_url: str) -> None:
    """First start: the master key file and the event store's tables (idempotent)."""
    ensure_master_key(settings)
    open_accounts(settings, database_url).close()
