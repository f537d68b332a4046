"""``secureconnect push dead-letters``: the kernel's ``sc_cli_commands`` hook, run
through the real CLI entry point against a file database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from secureconnect.cli import main
from secureconnect.testing.accounts import register_and_login
from secureconnect.testing.helpers import wait_for

from ..polls.helpers import make_team
from .fakes import FakeProvider
from .helpers import add_device, send


async def test_hook_sc_cli_commands(push_client: Any, fake: FakeProvider, tmp_path: Path,
                                    capsys: Any) -> None:
    fake.script = lambda rec: (500, {}, {})
    client = await push_client(max_attempts=1)
    team = await make_team(client, 1)
    await register_and_login(client)
    await add_device(client, team.members[0], "webhook", f"{fake.url}/hook/d")
    await send(client, team.owner, team.conversation_id)
    from secureconnect.app import KERNEL

    outbox = client.app[KERNEL].state["push"].outbox
    await wait_for(lambda: _count(outbox, 1), message="a dead letter")
    await client.close()
    config = tmp_path / "cli.toml"
    config.write_text(
        f'[testing.database]\nurl = "sqlite+aiosqlite:///{tmp_path}/push-test.db"\n'
        f'[testing.app]\ndata_dir = "{tmp_path}"\n'
        '[testing.push]\npoll_interval = 60.0\n')
    base = ["--env", "testing", "--config", str(config), "push", "dead-letters"]
    assert await _main([*base, "list"]) == 0
    out = capsys.readouterr().out
    assert "1 dead letter(s)" in out and "http_500" in out
    assert await _main([*base, "retry"]) == 2
    assert await _main([*base, "retry", "--all"]) == 0
    assert "1 notification(s) moved back" in capsys.readouterr().out
    assert await _main([*base, "list"]) == 0
    assert "0 dead letter(s)" in capsys.readouterr().out


async def _count(outbox: Any, n: int) -> bool:
    return len(await outbox.dead_letters()) == n


async def _main(argv: list[str]) -> int:
    import asyncio

    # main() runs its own event loop: keep it off this test's loop
    return await asyncio.get_running_loop().run_in_executor(None, main, argv)
