"""``create_app``: settings + plugins → an aiohttp application. Reads top to bottom
as the table of contents of the kernel."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from .config import load_settings, validate_settings
from .errors import ConfigError
from .health import Health
from .hooks import collect
from .http.context import KERNEL as KERNEL
from .http.context import ROUTES as ROUTES
from .http.handlers import wrap_handler
from .http.lowlevel import install_request_factory, quiet_parser_errors
from .http.middlewares import build_middlewares, security_headers
from .kernel import Kernel
from .plugins import blocked_tables, build_plugin_manager, validators_by_owner
from .routing import Route


def create_app(settings: Any = None, *, plugins: Iterable[object] = ()) -> web.Application:
    settings = settings if settings is not None else load_settings()
    pm = build_plugin_manager(settings, plugins)
    validate_settings(settings, validators_by_owner(pm), free_tables=blocked_tables(pm))
    kernel = build_kernel(settings, pm)

    app = web.Application(
        middlewares=build_middlewares(kernel),
        client_max_size=int(settings.http.max_body_size),
        handler_args={"max_field_size": 16384},
    )
    app[KERNEL] = kernel
    on_prepare = security_headers(kernel)
    app.on_response_prepare.append(on_prepare)
    install_request_factory(app, on_prepare)
    quiet_parser_errors()
    app[ROUTES] = mount_routes(app, kernel)
    kernel.ws.install_handlers(collect(kernel, "sc_ws_handlers"))
    kernel.jobs.install(collect(kernel, "sc_jobs"))
    kernel.health = Health(
        [check for _, check in collect(kernel, "sc_health_checks")],
        float(settings.health.check_timeout),
        kernel.metrics,
    )
    setup_templates(app, kernel)
    app.cleanup_ctx.extend(resource_contexts(kernel))
    app.on_shutdown.append(_close_sockets)
    return app


def build_kernel(settings: Any, pm: Any) -> Kernel:
    """The kernel with its services constructed (not yet opened)."""
    from .auth.ratelimit import RateLimits
    from .auth.service import AuthService
    from .jobs import JobScheduler
    from .store.bus import create_bus
    from .store.cache import Cache
    from .store.cassandra import Cassandra
    from .store.readcache import ReadCache
    from .store.sql import Database
    from .ws.gateway import Gateway

    kernel = Kernel(settings, pm)
    kernel.db = Database(settings.database, kernel.metrics, data_dir=settings.app.data_dir)
    kernel.cache = Cache(settings.redis, kernel.metrics)
    kernel.bus = create_bus(settings, kernel.metrics)
    kernel.read_cache = ReadCache(settings.cache, kernel.metrics, kernel.bus)
    kernel.cassandra = Cassandra(settings.cassandra, kernel.metrics)  # opened on demand
    kernel.rate_limits = RateLimits(kernel)
    kernel.auth = AuthService(kernel)
    kernel.ws = Gateway(kernel)
    kernel.jobs = JobScheduler(kernel)
    return kernel


def mount_routes(app: web.Application, kernel: Kernel) -> list[Route]:
    owners: dict[tuple[str, str], str] = {}
    routes: list[Route] = []
    for plugin, route in collect(kernel, "sc_routes"):
        key = (route.method, route.path)
        if key in owners:
            raise ConfigError(
                f"route {route.method} {route.path} is declared by both plugin "
                f"'{owners[key]}' and plugin '{plugin}'; disable one of them"
            )
        owners[key] = plugin
        app.router.add_route(route.method, route.path, wrap_handler(kernel, route),
                             name=route.name)
        routes.append(route)
    return routes


TEMPLATES = Path(__file__).parent / "templates"


def setup_templates(app: web.Application, kernel: Kernel) -> None:
    """Jinja2 for pages: plugin template folders first, then the kernel's."""
    dirs = [str(d) for _, d in collect(kernel, "sc_template_dirs")] + [str(TEMPLATES)]
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(dirs), autoescape=True)


def render_template(app: web.Application, name: str, context: dict[str, Any]) -> str:
    return str(aiohttp_jinja2.get_env(app).get_template(name).render(context))


def resource_contexts(kernel: Kernel) -> list[Any]:
    """Kernel services first, then each plugin's contexts, the job scheduler last."""
    contexts = [ctx for _, ctx in collect(kernel, "sc_cleanup_ctx")]

    def bind(ctx: Any) -> Any:
        async def run(app: web.Application) -> AsyncIterator[None]:
            async for _ in ctx(kernel):
                yield

        return run

    async def jobs(app: web.Application) -> AsyncIterator[None]:
        await kernel.jobs.start()
        yield
        await kernel.jobs.stop()

    return [*(bind(c) for c in contexts), jobs]


async def _close_sockets(app: web.Application) -> None:
    await app[KERNEL].ws.shutdown()


def serving_loop(settings: Any) -> asyncio.AbstractEventLoop | None:
    """The event loop ``secureconnect serve`` runs on: uvloop when ``server.uvloop`` is
    on and uvloop is installed (it is a dependency where it builds), else ``None``
    (asyncio's own)."""
    if not bool(settings.server.get("uvloop", True)):
        return None
    try:
        import uvloop
    except ImportError:
        return None
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def freeze_after_startup(app: web.Application) -> None:
    """For a serving process: once the app has started (plugins, pools, caches built),
    move everything alive into the collector's permanent generation. Those objects
    live as long as the process, and without this every full collection walks them
    all — a pause of ~0.1 s on the event loop under load. Not for test processes,
    which build many apps: what an app leaves behind would never be collected."""

    async def freeze(_app: web.Application) -> None:
        gc.collect()
        gc.freeze()

    app.on_startup.append(freeze)  # after the cleanup contexts, which run first
