"""``secureconnect`` command line: serve, check-config, plugins, migrate, init, jobs,
create-user, new-plugin, and the commands plugins add through ``sc_cli_commands``.

Ordinary errors are one line on stderr: exit 2 for usage and settings mistakes, 1 for
failures; ``--debug`` shows the traceback instead.

Why one file of ~510 lines: it is the argument parser and one short dispatcher per
built-in command, so every option and exit code can be read in one place; the work of
each command lives elsewhere (settings, app, ``init``/scaffold modules, plugins)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web

from . import __version__
from .config import as_plain_dict, load_settings, redact
from .errors import ConfigError, Problem

#: optional modules → the extra that installs them
EXTRAS = {"redis": "redis", "asyncpg": "postgres", "cassandra": "cassandra",
          "aiobotocore": "s3", "botocore": "s3", "wordllama": "ai", "http_ece": "push",
          "httpx": "push", "h2": "push"}


class CliError(Exception):
    """An ordinary failure: one line on stderr, exit code ``code`` (1 unless said)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class CliCommand:
    """A plugin's subcommand: ``configure`` adds its arguments to its own parser;
    ``run(kernel, args)`` does the work with the app's resources open."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[Any, argparse.Namespace], Awaitable[int]]


def build_parser(plugin_commands: Sequence[CliCommand] = ()) -> argparse.ArgumentParser:
    # the global options are accepted before and after the subcommand: each
    # subcommand has them too, with SUPPRESS so they do not reset what came before
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, argparse.SUPPRESS)
    parser = argparse.ArgumentParser(prog="secureconnect", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _global_options(parser, None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="what to do (`secureconnect COMMAND --help` for more)")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=[common])

    serve = command("serve", "run the server")
    serve.add_argument("--host", help="bind address (default: server.host)")
    serve.add_argument("--port", type=int, help="bind port (default: server.port)")
    serve.add_argument("--plugins-dir", metavar="DIR",
                       help="also load every single-file plugin (*.py) of DIR (development)")
    check = command("check-config", "validate settings and print them (secrets redacted)")
    check.add_argument("--json", action="store_true", help="print the settings as JSON")
    plugins = command("plugins", "list plugins, versions and hooks")
    plugins.add_argument("--json", action="store_true", help="print the list as JSON")
    command("migrate", "create or upgrade the database schema")
    new = command("new-plugin", "write a plugin package sc-NAME/ (entry point, a route, a "
                                "WebSocket handler, a job, settings and passing tests)")
    new.add_argument("name", help="the plugin's name: lower case, digits and _")
    new.add_argument("--dir", default=".", metavar="DIR",
                     help="where to create sc-NAME/ (default: the current directory)")
    init = command("init", "write config/settings.local.toml and config/.secrets.toml "
                           "(generated secrets, mode 0600) for a new deployment")
    init.add_argument("--dir", default=".", metavar="DIR",
                      help="the deployment's folder (default: the current directory)")
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    jobs = command("jobs", "list periodic jobs, or run one now")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", metavar="ACTION",
                                   help="`run NAME`; without an action, list the jobs")
    run = jobs_sub.add_parser("run", help="run one job now", parents=[common])
    run.add_argument("name", help="the job's name (see `secureconnect jobs`)")
    user = command("create-user", "create an account (verified; no mail is sent)")
    user.add_argument("email", help="the account's email address")
    user.add_argument("--display-name", default=None,
                      help="name shown to others (default: the part of the email before @)")
    user.add_argument("--admin", action="store_true", help="give the account the admin role")
    user.add_argument("--password-stdin", action="store_true",
                      help="read the password from standard input instead of prompting")
    for cmd in plugin_commands:
        cmd.configure(command(cmd.name, cmd.help))
    return parser


def builtin_commands() -> set[str]:
    sub = next(a for a in build_parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def _plugin_commands(argv: Sequence[str] | None, builtin: set[str]) -> dict[str, CliCommand]:
    """The enabled plugins' commands (none when the settings or a plugin do not load:
    the kernel command that runs next reports that error)."""
    from .plugins import build_plugin_manager

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", action="append", default=[])
    pre.add_argument("--env")
    known, _ = pre.parse_known_args(argv)
    try:
        pm = build_plugin_manager(load_settings(known.config, env=known.env))
    except Exception:
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


def _global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--config", action="append", metavar="FILE",
                        default=default if default is not None else [],
                        help="extra settings file (repeatable; later wins)")
    parser.add_argument("--env", choices=("development", "testing", "production"),
                        default=default,
                        help="settings environment (default: SECURECONNECT_ENV or development)")
    parser.add_argument("--debug", action="store_true",
                        default=default if default is not None else False,
                        help="show the full traceback of an error")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        commands = _plugin_commands(argv, builtin_commands())
    except ConfigError as exc:
        print(f"secureconnect: configuration error: {exc}", file=sys.stderr)
        return 2
    # usage errors: one line, exit 2 (argparse)
    args = build_parser(list(commands.values())).parse_args(argv)
    try:
        if args.command in commands:
            quiet_outside_serve()
            return int(_run_plugin_command(commands[args.command], args))
        return int(_dispatch(args))
    except Exception as exc:
        if args.debug:
            raise
        message, code = describe_error(exc)
        print(f"secureconnect: {message}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        return 130


def describe_error(exc: BaseException) -> tuple[str, int]:
    """One line and an exit code for an error the user can act on."""
    if isinstance(exc, ConfigError):
        return f"configuration error: {exc}", 2
    if isinstance(exc, CliError):
        return str(exc), exc.code
    if isinstance(exc, Problem):
        return f"{exc.detail} ({exc.code})", 1
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split(".")[0]
        extra = EXTRAS.get(top)
        if extra:
            return (f"the {top!r} module is missing for these settings; install it with "
                    f"pip install 'secureconnect[{extra}]'"), 1
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc} ({getattr(exc, 'filename', None) or type(exc).__name__})", 1
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text} (run with --debug for the traceback)", 1


def run_admin_command(prog: str, command: Callable[[], int], *, debug: bool = False) -> int:
    """Run a plugin's own admin command with this CLI's manners: warnings one line each
    (none of the serve-only ones), an ordinary error one line on stderr with exit code
    1 (2 for settings), the traceback only with ``debug``."""
    quiet_outside_serve()
    try:
        return int(command())
    except Exception as exc:
        if debug:
            raise
        message, code = describe_error(exc)
        print(f"{prog}: {message}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        return 130


def quiet_outside_serve() -> None:
    """Commands other than ``serve`` log warnings as one line each, without the
    warnings that only matter to a serving process (the ephemeral JWT secret)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("secureconnect: %(levelname)s: %(message)s"))
    handler.addFilter(lambda record: not getattr(record, "serve_only", False))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


def _dispatch(args: argparse.Namespace) -> int:
    from .app import create_app

    if args.command != "serve":
        quiet_outside_serve()
    if args.command == "init":
        return _init(args)
    if args.command == "new-plugin":
        return _new_plugin(args)
    settings = load_settings(args.config, env=args.env)
    if args.command == "serve":
        return _serve(settings, args)
    # a third-party plugin that fails to import must not hide the others from the
    # commands that inspect an installation: set it aside (and what requires it)
    broken = set_aside_broken_plugins(settings)
    for name, error in broken.items():
        print(f"secureconnect: plugin {name!r} {error}; fix or uninstall it, or switch it "
              f"off with `{name} = false` under [default.plugins]", file=sys.stderr)
    app = create_app(settings)
    if args.command == "check-config":
        check_backend_modules(settings)
        data = redact(as_plain_dict(settings))
        if args.json:
            print(json.dumps(data, indent=2, default=str))
        else:
            print(f"settings are valid (environment: {settings.current_env.lower()})")
            for table, values in data.items():
                print(f"[{table}]")
                for key, value in (values.items() if isinstance(values, dict) else ()):
                    print(f"  {key} = {json.dumps(value, default=str)}")
        return 1 if broken else 0
    if args.command == "plugins":
        return _plugins(app, settings, as_json=args.json, broken=broken)
    if broken:
        raise CliError(f"plugin(s) {', '.join(sorted(broken))} cannot be loaded (see above)")
    if args.command == "migrate":
        return asyncio.run(_migrate(app))
    if args.command == "jobs":
        return asyncio.run(_jobs(app, getattr(args, "name", None)))
    if args.command == "create-user":
        return asyncio.run(_create_user(app, args))
    raise AssertionError(args.command)


def backend_modules(settings: Any) -> list[tuple[str, str]]:
    """(module, setting) for each back end the settings choose that needs an extra: a
    PostgreSQL URL, a Redis URL, Cassandra messages, the drive's S3 store."""
    from .plugins import plugin_switches

    switches = plugin_switches(settings)

    def on(plugin: str) -> bool:
        table = settings.get(plugin) or {}
        return switches.get(plugin) is not False and table.get("enabled", True) is not False

    found = []
    if str(settings.get("database.url") or "").startswith(("postgresql", "postgres")):
        found.append(("asyncpg", "database.url"))
    if settings.get("redis.url"):
        found.append(("redis", "redis.url"))
    if on("chat") and str(settings.get("chat.message_store") or "") == "cassandra":
        found.append(("cassandra", "chat.message_store"))
    if on("drive") and str(settings.get("drive.backend") or "") == "s3":
        found.append(("aiobotocore", "drive.backend"))
    if on("ai") and str(settings.get("ai.provider") or "") == "local":
        found.append(("wordllama", "ai.provider"))
    return found


#: back ends whose plugin starts without the module and answers 503 until it is there
_DEGRADES = {"ai.provider"}


def check_backend_modules(settings: Any) -> None:
    """``check-config`` refuses settings whose back end cannot be imported, as ``serve``
    would at start-up (the message names the pip command); for a back end that only
    degrades (the local AI model) it warns."""
    import importlib

    for module, setting in backend_modules(settings):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            extra = EXTRAS.get(module)
            fix = f"install it with pip install 'secureconnect[{extra}]'"
            if setting in _DEGRADES:
                print(f"secureconnect: warning: setting `{setting}` needs the {module!r} "
                      f"module (its requests answer 503 until then); {fix}", file=sys.stderr)
                continue
            raise CliError(f"setting `{setting}` needs the {module!r} module; {fix}") from exc


def set_aside_broken_plugins(settings: Any) -> dict[str, str]:
    """Load every enabled installed plugin; switch off (in ``settings``) each one that
    fails to import and every plugin that requires it. Returns name → what failed."""
    from .config import override
    from .plugins import entry_points, plugin_switches, requirements

    switches = plugin_switches(settings)
    broken: dict[str, str] = {}
    loaded: dict[str, object] = {}
    for name, ep in sorted(entry_points().items()):
        if switches.get(name) is False:
            continue
        try:
            loaded[name] = ep.load()
        except Exception as exc:
            broken[name] = f"failed to import: {type(exc).__name__}: {exc}"
    grew = True
    while grew:
        grew = False
        for name, plugin in loaded.items():
            needs = [r for r in requirements(plugin) if r in broken]
            if name not in broken and needs:
                broken[name] = f"requires plugin {needs[0]!r}, which failed to import"
                grew = True
    for name in broken:
        override(settings, f"plugins.{name}", False, "a plugin that failed to import")
    return broken


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


def _init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .initconfig import write_initial_files

    try:
        written = write_initial_files(Path(args.dir), force=args.force)
    except FileExistsError as exc:
        raise CliError(str(exc)) from None
    for path in written:
        print(f"wrote {path}")
    print("next: edit config/settings.local.toml, then `secureconnect serve`")
    return 0


def _new_plugin(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .scaffold import write_plugin

    try:
        root = write_plugin(args.name, Path(args.dir))
    except ValueError as exc:
        raise CliError(str(exc), code=2) from None
    except FileExistsError as exc:
        raise CliError(str(exc)) from None
    print(f"wrote {root}/")
    print(f"next: pip install -e '{root}[test]' && (cd {root} && pytest)")
    return 0


def _serve(settings: Any, args: argparse.Namespace) -> int:
    from .app import create_app, freeze_after_startup, serving_loop
    from .logs import configure_logging
    from .plugin_files import load_plugin_files

    broken = set_aside_broken_plugins(settings)
    if broken:
        name, error = next(iter(broken.items()))
        raise ConfigError(f"plugin {name!r} {error}; fix or uninstall it, or switch it off "
                          f"with `{name} = false` under [default.plugins]")
    configure_logging(settings.logging.level, settings.logging.format)
    extra = load_plugin_files(args.plugins_dir) if args.plugins_dir else []
    app = create_app(settings, plugins=extra)
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


def _plugins(app: web.Application, settings: Any, *, as_json: bool,
             broken: dict[str, str] | None = None) -> int:
    from .http.context import KERNEL
    from .plugins import describe_plugins

    broken = broken or {}
    infos = describe_plugins(app[KERNEL].pm, settings)
    if as_json:
        rows = [{**i.as_dict(), **({"error": broken[i.name]} if i.name in broken else {})}
                for i in infos]
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<12} {'version':<9} {'enabled':<8} {'essential':<9} hooks")
    for i in infos:
        enabled = "BROKEN" if i.name in broken else "yes" if i.enabled else "no"
        print(f"{i.name:<12} {i.version:<9} {enabled:<8} "
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
        raise CliError(f"no job named {name!r}; see `secureconnect jobs`", code=2)
    async with _running(app) as kernel:
        try:
            result: Any = await kernel.jobs.run(name, raise_errors=True)
        except Exception as exc:
            raise CliError(f"job {name} failed: {type(exc).__name__}: {exc}") from exc
        print(f"{name}: {result!r}")
    return 0


async def _create_user(app: web.Application, args: argparse.Namespace) -> int:
    from .app import KERNEL
    from .auth.service import create_user

    kernel = app[KERNEL]
    email = kernel.auth.normalise_email(args.email)  # a bad address fails before asking
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif not sys.stdin.isatty():
        raise CliError("no terminal to ask the password on; pipe it in with --password-stdin")
    else:
        password = getpass.getpass("password: ")
    if not password:
        raise CliError("the password is empty")
    kernel.auth.policy.check(password)
    async with _running(app) as kernel:
        user = await create_user(kernel, email, password,
                                 args.display_name or args.email.split("@")[0], admin=args.admin)
        print(json.dumps(user, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
