"""The storage paths a benchmark measures: plain PostgreSQL, TimescaleDB, or both."""

from __future__ import annotations

import argparse

from safeguard.devservers import timescaledb_available

STORAGES = ("plain", "timescale")


def add_storage_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", choices=[*STORAGES, "both"], default=None,
                        help="storage path(s) to measure (default: both when TimescaleDB is installed, else plain)")


def chosen_storages(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The paths to measure; an error when TimescaleDB is asked for and missing, a note when it is skipped."""
    available = timescaledb_available()
    choice = args.storage or ("both" if available else "plain")
    if choice != "plain" and not available:
        parser.error("TimescaleDB is not installed for this machine's PostgreSQL"
                     " (../shared/tools/install-timescaledb, or docs/operations.md)")
    if args.storage is None and not available:
        print("TimescaleDB is not installed: measuring plain PostgreSQL only")
    return list(STORAGES) if choice == "both" else [choice]
