"""A second process for tests: reads a customer whenever a line arrives on stdin."""

from __future__ import annotations

import sys
from pathlib import Path
from uuid import UUID

import msgspec

from picasse.runners.settings import Settings
from picasse.runners.wiring import open_accounts


def main() -> None:
    data_dir, database_url, schema, customer_id = sys.argv[1:5]
    settings = Settings(data_dir=Path(data_dir), database_url=database_url)
    accounts = open_accounts(settings, database_url, schema=schema)
    for _ in sys.stdin:
        sys.stdout.write(msgspec.json.encode(accounts.customer(UUID(customer_id))).decode() + "\n")
        sys.stdout.flush()
    accounts.close()


if __name__ == "__main__":
    main()
