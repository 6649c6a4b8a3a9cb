"""Text that PostgreSQL can store: its ``text`` type refuses the NUL character (psycopg.DataError)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def no_nul(value: str) -> str:
    """``value`` unchanged, or ValueError (a 4xx at the API, a rejection elsewhere) when it holds NUL."""
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    return value


PgText = Annotated[str, AfterValidator(no_nul)]
