"""What the plugin keeps in ``kernel.state["drive"]`` while the app runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

    from .service import DriveService
    from .sharing import Sharing
    from .storage.local import LocalStorage
    from .tus import TusUploads

STATE_KEY = "drive"


@dataclass
class DriveRuntime:
    drive: DriveService
    sharing: Sharing
    #: the local back end (serves signed URLs and tus); None on S3
    local: LocalStorage | None
    tus: TusUploads | None


def runtime(request: web.Request) -> DriveRuntime:
    from secureconnect.app import KERNEL

    found: DriveRuntime = request.app[KERNEL].state[STATE_KEY]
    return found
