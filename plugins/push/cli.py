"""``secureconnect push dead-letters list|retry``: inspect and requeue dead letters."""

from __future__ import annotations

import argparse
import json
from typing import Any

from secureconnect.cli import CliCommand
from secureconnect.kernel import Kernel

from .outbox import Outbox


def _configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="push_command", required=True)
    dead = sub.add_parser("dead-letters", help="list or retry undeliverable notifications")
    dead_sub = dead.add_subparsers(dest="dead_command", required=True)
    listing = dead_sub.add_parser("list", help="newest first (no payloads, no tokens)")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true")
    retry = dead_sub.add_parser("retry", help="move dead letters back into the outbox")
    retry.add_argument("ids", nargs="*", help="dead-letter ids (default: with --all, every one)")
    retry.add_argument("--all", action="store_true")


async def _run(kernel: Kernel, args: argparse.Namespace) -> int:
    outbox = Outbox(kernel, lease=60.0, ttl=0)
    if args.dead_command == "list":
        rows = await outbox.dead_letters(max(1, min(int(args.limit), 10_000)))
        shown: list[dict[str, Any]] = [
            {k: r[k] for k in ("id", "provider", "device_id", "user_id", "attempts",
                               "last_error", "created_at", "failed_at")} for r in rows]
        if args.json:
            print(json.dumps(shown, default=str, indent=2))
        else:
            for r in shown:
                print(f"{r['id']}  {r['provider']:<8} attempts={r['attempts']:<3} "
                      f"failed_at={r['failed_at']}  {r['last_error']}")
            print(f"{len(shown)} dead letter(s)")
        return 0
    if not args.ids and not args.all:
        print("secureconnect: name dead-letter ids or pass --all")
        return 2
    moved = await outbox.retry_dead_letters(None if args.all else list(args.ids))
    print(f"{moved} notification(s) moved back to the outbox")
    return 0


COMMANDS = [CliCommand("push", "push notifications: dead letters", _configure, _run)]
