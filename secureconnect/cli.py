"""``secureconnect`` command line: serve, check-config, plugins, migrate, jobs, create-user,
and the commands plugins add through ``sc_cli_commands``."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web

from .config import as_plain_dict, load_settings, redact
from .errors import ConfigError


@dataclass(frozen=True)
class CliCommand:
    """A plugin's subcommand: ``configure`` adds its arguments to its own parser;
    ``run(kernel, args)`` does the work with the app's resources open."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[Any, argparse.Namespace], Awaitable[int]]


def _plugin_commands(argv: Sequence[str] | None, builtin: set[str]) -> dict[str, CliCommand]:
    """The enabled plugins' commands (none when the settings do not load: the kernel
    command that runs next reports that error)."""
    from .plugins import build_plugin_manager

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", action="append", default=[])
    pre.add_argument("--env")
    known, _ = pre.parse_known_args(argv)
    try:
        pm = build_plugin_manager(load_settings(known.config, env=known.env))
    except ConfigError:
        return {}
    found: dict[str, CliCommand] = {}
    owners: dict[str, str] = {}
    for impl in pm.hook.sc_cli_commands.get_hookimpls():
        for cmd in cast("Sequence[CliCommand]", impl.function()):
            clash = "the kernel" if cmd.name in builtin else owners.get(cmd.name)
            if clash:
                raise ConfigError(f"plugin {impl.plugin_name!r} adds command {cmd.name!r}, "
                                  f"which {clash} already has; rename one of them")
            found[cmd.name], owners[cmd.name] = cmd, f"plugin {impl.plugin_name!r}"
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="secureconnect", description=__doc__)
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="extra settings file (repeatable; later wins)")
    parser.add_argument("--env", choices=("development", "testing", "production"),
                        help="settings environment (default: SECURECONNECT_ENV or development)")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    check = sub.add_parser("check-config", help="validate settings and print them (redacted)")
    check.add_argument("--json", action="store_true")
    plugins = sub.add_parser("plugins", help="list plugins, versions and hooks")
    plugins.add_argument("--json", action="store_true")
    sub.add_parser("migrate", help="create or upgrade the database schema")
    jobs = sub.add_parser("jobs", help="list periodic jobs, or run one now")
    jobs_sub = jobs.add_subparsers(dest="jobs_command")
    run = jobs_sub.add_parser("run", help="run one job now")
    run.add_argument("name")
    user = sub.add_parser("create-user", help="create an account")
    user.add_argument("email")
    user.add_argument("--display-name", default=None)
    user.add_argument("--admin", action="store_true")
    user.add_argument("--password-stdin", action="store_true",
                      help="read the password from standard input instead of prompting")
    try:
        commands = _plugin_commands(argv, set(sub.choices))
    except ConfigError as exc:
        print(f"secureconnect: configuration error: {exc}", file=sys.stderr)
        return 2
    for command in commands.values():
        command.configure(sub.add_parser(command.name, help=command.help))
    args = parser.parse_args(argv)
    try:
        if args.command in commands:
            return int(_run_plugin_command(commands[args.command], args))
        return int(_dispatch(args))
    except ConfigError as exc:
        print(f"secureconnect: configuration error: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    from .app import create_app

    settings = load_settings(args.config, env=args.env)
    if args.command == "serve":
        return _serve(settings, args)
    app = create_app(settings)
    if args.command == "check-config":
        data = redact(as_plain_dict(settings))
        if args.json:
            print(json.dumps(data, indent=2, default=str))
        else:
            print(f"settings are valid (environment: {settings.current_env.lower()})")
            for table, values in data.items():
                print(f"[{table}]")
                for key, value in (values.items() if isinstance(values, dict) else ()):
                    print(f"  {key} = {json.dumps(value, default=str)}")
        return 0
    if args.command == "plugins":
        return _plugins(app, settings, as_json=args.json)
    if args.command == "migrate":
        return asyncio.run(_migrate(app))
    if args.command == "jobs":
        return asyncio.run(_jobs(app, getattr(args, "name", None)))
    if args.command == "create-user":
        return asyncio.run(_create_user(app, args))
    raise AssertionError(args.command)


def _urls(app: web.Application, host: str, port: int) -> list[str]:
    """Where a person finds the service: the web client and the API docs."""
    from .http.context import KERNEL

    kernel = app[KERNEL]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base = f"http://{shown}:{port}"
    if kernel.pm.is_blocked("web") or kernel.pm.get_plugin("web") is None:
        return [f"SecureConnect API: {base}/openapi.json (web plugin disabled)"]
    lines = [f"SecureConnect web client: {base}/"]
    if kernel.settings.web.docs:
        lines.append(f"API docs:                 {base}/docs")
    if kernel.settings.web.admin:
        lines.append(f"admin console:            {base}/admin")
    return lines


def _run_plugin_command(command: CliCommand, args: argparse.Namespace) -> int:
    from .app import create_app

    app = create_app(load_settings(args.config, env=args.env))

    async def run() -> int:
        async with _running(app) as kernel:
            return await command.run(kernel, args)

    return asyncio.run(run())


def _serve(settings: Any, args: argparse.Namespace) -> int:
    from .app import create_app, freeze_after_startup, serving_loop
    from .logs import configure_logging

    configure_logging(settings.logging.level, settings.logging.format)
    app = create_app(settings)
    freeze_after_startup(app)
    host = args.host or settings.server.host
    port = args.port if args.port is not None else int(settings.server.port)
    for line in _urls(app, host, port):
        print(line, file=sys.stderr)
    web.run_app(
        app,
        loop=serving_loop(settings),
        host=host,
        port=port,
        shutdown_timeout=float(settings.server.shutdown_timeout),
        backlog=int(settings.server.backlog),
        access_log=None,
        print=lambda msg: print(msg, file=sys.stderr),
    )
    return 0


def _plugins(app: web.Application, settings: Any, *, as_json: bool) -> int:
    from .http.context import KERNEL
    from .plugins import describe_plugins

    infos = describe_plugins(app[KERNEL].pm, settings)
    if as_json:
        print(json.dumps([i.as_dict() for i in infos], indent=2))
        return 0
    print(f"{'name':<12} {'version':<9} {'enabled':<8} {'essential':<9} hooks")
    for i in infos:
        print(f"{i.name:<12} {i.version:<9} {('yes' if i.enabled else 'no'):<8} "
              f"{('yes' if i.essential else 'no'):<9} {', '.join(i.hooks) or '-'}")
    return 0


@asynccontextmanager
async def _running(app: web.Application) -> AsyncIterator[Any]:
    """Open the app's resources (database, cache, ...) without serving HTTP."""
    from .http.context import KERNEL

    runner = web.AppRunner(app)
    await runner.setup()
    try:
        yield app[KERNEL]
    finally:
        await runner.cleanup()


async def _migrate(app: web.Application) -> int:
    from .store.schema import migrate

    async with _running(app) as kernel:
        applied = await migrate(kernel)
        for line in applied or ["schema is up to date"]:
            print(line)
    return 0


async def _jobs(app: web.Application, name: str | None) -> int:
    from .http.context import KERNEL

    kernel = app[KERNEL]
    if name is None:
        for job_name, job in sorted(kernel.jobs.jobs.items()):
            owner = kernel.jobs.owners[job_name]
            print(f"{job_name:<32} every {job.interval:>7g} s   ({owner})")
        return 0
    if name not in kernel.jobs.jobs:
        print(f"secureconnect: no job named {name!r}; see `secureconnect jobs`", file=sys.stderr)
        return 2
    async with _running(app) as kernel:
        try:
            result: Any = await kernel.jobs.run(name, raise_errors=True)
        except Exception as exc:
            print(f"secureconnect: job {name} failed: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            return 1
        print(f"{name}: {result!r}")
    return 0


async def _create_user(app: web.Application, args: argparse.Namespace) -> int:
    from .auth.service import create_user

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
    async with _running(app) as kernel:
        user = await create_user(kernel, args.email, password,
                                 args.display_name or args.email.split("@")[0], admin=args.admin)
        print(json.dumps(user, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
