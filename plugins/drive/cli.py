"""Admin command for drive quotas (the kernel CLI has no plugin sub-commands yet):

    python -m secureconnect_plugins.drive.cli quota USER_ID              # show
    python -m secureconnect_plugins.drive.cli quota USER_ID --limit 5GiB # override
    python -m secureconnect_plugins.drive.cli quota USER_ID --default    # back to default

Settings are loaded as by ``secureconnect`` (``--config``, ``--env``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import uuid
from collections.abc import Sequence

from aiohttp import web

from secureconnect.app import KERNEL, create_app
from secureconnect.cli import run_admin_command
from secureconnect.config import load_settings

from .runtime import STATE_KEY

_UNITS = {"": 1, "b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
          "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}


def parse_size(text: str) -> int:
    """``5368709120``, ``5GiB``, ``500 MB`` → bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    if m is None or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 5GiB or 500MB")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def _user_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a user id (a UUID)") from None


async def _quota(app: web.Application, user_id: str, limit: int | None, reset: bool) -> int:
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        drive = app[KERNEL].state[STATE_KEY].drive
        if reset:
            out = await drive.set_quota(user_id, None)
        elif limit is not None:
            out = await drive.set_quota(user_id, limit)
        else:
            out = await drive.quota(user_id)
        print(json.dumps({"user_id": user_id, **out}))
    finally:
        await runner.cleanup()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m secureconnect_plugins.drive.cli",
                                     description="drive administration")
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="extra settings file (repeatable; later wins)")
    parser.add_argument("--env", choices=("development", "testing", "production"),
                        help="settings environment (default: SECURECONNECT_ENV or development)")
    sub = parser.add_subparsers(dest="command", required=True)
    quota = sub.add_parser("quota", help="show or override a user's quota")
    quota.add_argument("user_id", type=_user_id)
    group = quota.add_mutually_exclusive_group()
    group.add_argument("--limit", type=parse_size, help="the user's limit, e.g. 20GiB")
    group.add_argument("--default", action="store_true", help="use the default quota again")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error")
    args = parser.parse_args(argv)

    def command() -> int:
        app = create_app(load_settings(args.config, env=args.env))
        return asyncio.run(_quota(app, args.user_id, args.limit, args.default))

    # one line per error, exit 1 (2 for settings), as `secureconnect` does
    return run_admin_command("drive", command, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
