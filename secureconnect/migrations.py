"""Schema migrations: one Alembic version location per plugin (kernel included)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import MetaData


@dataclass(frozen=True)
class MigrationSource:
    #: the owner's name; also the Alembic branch label
    name: str
    metadata: MetaData
    #: folder of the owner's Alembic revision files
    versions: Path
