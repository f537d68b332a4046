# Hook specifications have docstrings for bodies; pluggy never runs them.
# mypy: disable-error-code="empty-body"
"""Every hook SecureConnect calls. Plugin authors implement these with
``from secureconnect import hookimpl``.

Conventions
-----------
* Every hook is prefixed ``sc_``. Implementations may accept any subset of the
  arguments (pluggy passes them by name).
* **Registration hooks** are called once per application, synchronously, while the
  app is built; they return data (lists, dicts) and must not do I/O.
* **Runtime hooks** may be ``async def``; every hook is called by one module,
  :mod:`secureconnect.hooks`, which awaits every result and states the one ordering
  rule (plugin order; ``tryfirst``/``trylast`` move an implementation to the front or
  back). None of them is ``firstresult``.
* A plugin that offers hooks to others declares them in its own ``hookspecs`` module
  and adds them in :func:`sc_addhooks` (chat's message and participant hooks live in
  ``secureconnect_plugins.chat.hookspecs``).
* ``kernel`` is the :class:`secureconnect.kernel.Kernel` of the application the hook is
  called for; keep per-app state on it (``kernel.state``), never in module globals.

Each hook has a section in ``docs/plugins.md`` and a test in the kitchen-sink plugin;
``tests/test_meta.py`` fails when one is missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from dynaconf import Validator

    from .cli import CliCommand
    from .health import HealthCheck
    from .jobs import Job
    from .kernel import CleanupContext, Kernel
    from .migrations import MigrationSource
    from .routing import Route
    from .web.panels import WebPanel
    from .ws.gateway import Connection, WsHandler

hookspec = pluggy.HookspecMarker("secureconnect")

# ---------------------------------------------------------------------------
# Registration hooks: called once while the application is built
# ---------------------------------------------------------------------------


@hookspec(historic=True)
def sc_addhooks(pm: pluggy.PluginManager) -> None:
    """Add the hook specifications the plugin offers to other plugins:
    ``pm.add_hookspecs(my_plugin.hookspecs)``.

    Called once for every plugin as it is registered (a historic hook), before any
    other hook, so the specs exist before any implementation of them is checked. Only
    enabled plugins add their hooks; a plugin implementing another plugin's hook marks
    the implementation ``@hookimpl(optionalhook=True)`` unless it ``REQUIRES`` that
    plugin.
    """


@hookspec
def sc_settings_validators() -> Sequence[Validator]:
    """Return the dynaconf ``Validator`` objects for the plugin's own settings table.

    Called before anything else, for every enabled plugin. Name keys with the table
    prefix (``Validator("polls.max_options", is_type_of=int, gte=2, lte=50)``). Every
    key a plugin reads must have a validator: a key in the table that no validator
    names is reported as unknown and stops start-up. Defaults belong in
    ``config/settings.toml`` for built-in plugins and in ``default=`` for third-party
    ones.
    """


@hookspec
def sc_cli_commands() -> Sequence[CliCommand]:
    """Return :class:`secureconnect.cli.CliCommand` objects: extra ``secureconnect
    <name> ...`` subcommands (e.g. ``secureconnect push dead-letters``).

    Collected once per CLI run, for enabled plugins, before arguments are parsed. A
    command's ``run(kernel, args)`` is awaited with the app's resources open (as for
    ``migrate``) and returns the exit status. A name that clashes with a kernel command
    or another plugin's is a start-up error naming both.
    """


@hookspec
def sc_cleanup_ctx(kernel: Kernel) -> Sequence[CleanupContext]:
    """Return async generator functions ``async def ctx(kernel): ...; yield; ...``.

    Each opens the plugin's resources before ``yield`` and closes them after. They run
    after the kernel's own resources (database, cache, bus, HTTP client) are open and
    are closed before them, in reverse registration order.
    """


@hookspec
def sc_routes(kernel: Kernel) -> Sequence[Route]:
    """Return :class:`secureconnect.routing.Route` objects (build them with
    :class:`secureconnect.routing.RouteTable`).

    Two plugins declaring the same method and path is a start-up error naming both.
    Routes require an access token unless declared with ``auth=False``.
    """


@hookspec
def sc_ws_handlers(kernel: Kernel) -> Mapping[str, WsHandler]:
    """Return ``{"event.type": handler}`` for incoming WebSocket frames.

    ``handler(conn, data)`` is awaited with the :class:`Connection` and the frame's
    ``data`` object; what it returns is sent back as the ``ack`` data when the frame
    had an ``id``. Raise :class:`secureconnect.errors.Problem` to answer with an
    ``error`` frame. Two plugins claiming the same type is a start-up error.
    """


@hookspec
def sc_jobs(kernel: Kernel) -> Sequence[Job]:
    """Return :class:`secureconnect.jobs.Job` definitions (name, interval, coroutine).

    Job names are global; a clash is a start-up error. Only one instance runs a
    given job per interval when instances share Redis or the database.
    """


@hookspec
def sc_health_checks(kernel: Kernel) -> Sequence[HealthCheck]:
    """Return :class:`secureconnect.health.HealthCheck` objects for ``/health/ready``.

    A check is an async callable that raises (or times out) when its dependency is
    unavailable; each runs with its own short timeout.
    """


@hookspec
def sc_migrations() -> Sequence[MigrationSource]:
    """Return the plugin's :class:`secureconnect.migrations.MigrationSource` objects:
    its SQLAlchemy ``MetaData`` and the folder of its Alembic revisions.

    ``secureconnect migrate`` upgrades every enabled plugin's version location.
    """


@hookspec
def sc_template_dirs() -> Sequence[str]:
    """Return folders of Jinja2 templates the plugin renders with aiohttp-jinja2.

    Earlier plugins win on a name clash, so prefix template names with the plugin name.
    """


@hookspec
def sc_web_panels(kernel: Kernel) -> Sequence[WebPanel]:
    """Return :class:`secureconnect.web.panels.WebPanel` objects: the plugin's part of
    the web client served at ``/`` (and of the admin console at ``/admin``).

    A panel names a folder of static files (served under
    ``/static/plugins/<panel name>/``), the ES module scripts and stylesheets from it
    that every page of the client loads, and whether it mounts on the ``"app"`` page
    (``/``) or the ``"admin"`` page (``/admin``). Scripts run after the kernel's shell
    module and reach the shell through ``import {app} from "/static/web/app.js"``
    (see docs/web.md). Pages allow scripts and styles from the same origin only (no
    inline code): put all of a panel's code in its files. Panels load in plugin order
    (see :mod:`secureconnect.hooks`); two panels with the same name is a start-up
    error naming both plugins.
    """


# ---------------------------------------------------------------------------
# Runtime hooks: called while serving; may be async
# ---------------------------------------------------------------------------


@hookspec
def sc_migrate(kernel: Kernel) -> Sequence[str]:
    """Upgrade schemas that live outside the SQL database (a Cassandra keyspace, a
    search index). Called by ``secureconnect migrate`` after the SQL migrations, while
    the app's resources are open. Return one line per change applied (empty when up
    to date); raise to fail the command.
    """


@hookspec
def sc_authorize_topic(kernel: Kernel, user: Any, topic: str) -> bool | None:
    """May ``user`` subscribe to ``topic`` (e.g. ``conversation:<id>``)?

    Return ``True`` to allow, ``False`` to refuse, ``None`` when the topic is not the
    plugin's. Deny by default: a subscription is allowed only when at least one plugin
    says ``True`` and none says ``False``. An exception counts as ``False``.
    """


@hookspec
def sc_ws_connected(kernel: Kernel, conn: Connection) -> None:
    """A WebSocket (or event-stream) connection was authenticated and opened.

    Subscribe it to the plugin's topics (``await conn.subscribe(topic)``) or update
    presence. Exceptions are logged and do not close the connection.
    """


@hookspec
def sc_ws_disconnected(kernel: Kernel, conn: Connection) -> None:
    """A connection closed (any reason). Its subscriptions are already released."""


@hookspec
def sc_user_registered(kernel: Kernel, user: dict[str, Any]) -> None:
    """A new account was created. Observe only; exceptions are logged."""


@hookspec
def sc_sessions_revoked(
    kernel: Kernel, user_id: str | None, session_ids: list[str], reason: str
) -> None:
    """Auth sessions were revoked (``reason``: ``logout``, ``password_reset``,
    ``refresh_token_reuse``, ...). Remove what belongs to those sessions (push devices
    registered with them). Runs on the instance that revoked them, after the database
    says so; exceptions are logged and never fail the revocation.
    """


@hookspec
def sc_user_deleted(kernel: Kernel, user: dict[str, Any]) -> None:
    """An account was deleted. Remove the plugin's per-user data. Exceptions are logged."""
