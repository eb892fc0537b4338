"""The one typed settings object, read from the environment here and passed inward."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec


class SettingsError(Exception):
    """A setting has a value the platform cannot use."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a Picasse process needs to know about where it runs."""

    data_dir: Path
    database_url: str | None = None  # None: the embedded PostgreSQL under data_dir
    database_schema: str = ""  # "" : the database's default schema
    nats_url: str | None = None  # None: the embedded NATS server under data_dir
    master_key_file: Path | None = None  # None: data_dir / "master.key"
    http_host: str = "127.0.0.1"
    http_port: int = 8000

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("PICASSE_DATA_DIR") or ".picasse").expanduser().absolute()
        port_text = env.get("PICASSE_HTTP_PORT") or "8000"
        try:
            http_port = int(port_text)
        except ValueError:
            raise SettingsError(f"PICASSE_HTTP_PORT must be a number, not {port_text!r}") from None
        master = env.get("PICASSE_MASTER_KEY_FILE")
        return cls(
            data_dir=data_dir,
            database_url=env.get("PICASSE_DATABASE_URL") or None,
            database_schema=env.get("PICASSE_DATABASE_SCHEMA") or "",
            nats_url=env.get("PICASSE_NATS_URL") or None,
            master_key_file=Path(master).expanduser().absolute() if master else None,
            http_host=env.get("PICASSE_HTTP_HOST") or "127.0.0.1",
            http_port=http_port,
        )

    @property
    def master_key_path(self) -> Path:
        return self.master_key_file or self.data_dir / "master.key"

    @property
    def postgres_dir(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def nats_dir(self) -> Path:
        return self.data_dir / "nats"
