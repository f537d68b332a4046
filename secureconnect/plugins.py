"""The plugin manager: kernel defaults, entry-point plugins, enable/disable from settings.

One :class:`pluggy.PluginManager` per application (no module-level singleton). The
kernel's own features are plugins too, registered from :data:`DEFAULT_PLUGINS`; the
:data:`ESSENTIAL_PLUGINS` among them cannot be disabled. Everything else — the
built-in features in ``plugins/`` and third-party packages — is found through the
``secureconnect`` entry-point group and can be switched off in ``[plugins]``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import ConfigError

log = logging.getLogger(__name__)

PROJECT = "secureconnect"
ENTRY_POINT_GROUP = "secureconnect"

#: Kernel plugins, registered in this order before any entry point.
DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("core", "secureconnect.builtin.core"),
    ("stores", "secureconnect.builtin.stores"),
    ("auth", "secureconnect.builtin.auth"),
    ("ws", "secureconnect.builtin.ws"),
    ("web", "secureconnect.builtin.web"),
)
#: Kernel plugins that ``[plugins]`` cannot switch off.
ESSENTIAL_PLUGINS = frozenset({"core", "stores", "auth", "ws"})


@dataclass(frozen=True)
class PluginInfo:
    name: str
    version: str
    enabled: bool
    essential: bool
    source: str
    hooks: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "enabled": self.enabled,
            "essential": self.essential,
            "source": self.source,
            "hooks": list(self.hooks),
        }


def entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def plugin_switches(settings: Any) -> dict[str, bool]:
    table = settings.get("plugins") or {}
    out: dict[str, bool] = {}
    for name, value in dict(table).items():
        if not isinstance(value, bool):
            raise ConfigError(
                f"setting `plugins.{name}` must be true or false, got {value!r}; "
                f"write `{name} = false` under [plugins] to disable the plugin"
            )
        out[str(name).lower()] = value
    return out


def build_plugin_manager(settings: Any, extra: Iterable[object] = ()) -> pluggy.PluginManager:
    """Create the app's plugin manager and register every enabled plugin in plugin
    order (:mod:`secureconnect.hooks` states the rule): kernel defaults, then installed
    plugins after the plugins they ``REQUIRES`` (ties by name), then ``extra`` (objects
    or modules passed to ``create_app(plugins=...)``, handy in tests) in the order
    given. An ``extra`` that is also an installed plugin replaces it (no double
    registration). A required plugin that is disabled or missing stops start-up."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    # plugins that offer hooks to others add their specs when registered (pytest_addhooks)
    pm.hook.sc_addhooks.call_historic(kwargs={"pm": pm})
    switches = plugin_switches(settings)
    installed = entry_points()
    extra = list(extra)
    extras = {_extra_name(p): p for p in extra}
    known = {name for name, _ in DEFAULT_PLUGINS} | set(installed) | set(extras)
    for name, enabled in switches.items():
        if name not in known:
            raise ConfigError(
                f"setting `plugins.{name}` names no installed plugin; installed: "
                f"{', '.join(sorted(known))}"
            )
        if not enabled and name in ESSENTIAL_PLUGINS:
            raise ConfigError(
                f"setting `plugins.{name}` = false: '{name}' is an essential kernel plugin "
                "and cannot be disabled; remove the line"
            )
        if not enabled:
            pm.set_blocked(name)
    for name, module in DEFAULT_PLUGINS:
        if not pm.is_blocked(name):
            pm.register(importlib.import_module(module), name=name)
    features: dict[str, object] = {}
    for name in sorted(installed):
        if not pm.is_blocked(name) and name not in extras:
            features[name] = installed[name].load()
    for name, plugin in extras.items():
        if not pm.is_blocked(name) and pm.get_plugin(name) is None:
            features[name] = plugin
    for name in dependency_order(features, blocked=pm.is_blocked, installed=known):
        pm.register(features[name], name=name)
    pm.check_pending()
    return pm


def requirements(plugin: object) -> tuple[str, ...]:
    """The plugins ``plugin`` declares it needs (``REQUIRES = ("chat",)`` in its module)."""
    return tuple(str(r) for r in getattr(plugin, "REQUIRES", ()))


def dependency_order(
    plugins: Mapping[str, object],
    *,
    blocked: Callable[[str], bool],
    installed: Iterable[str],
) -> list[str]:
    """Names of ``plugins`` (given in tie-break order) with every plugin after the ones
    it requires. A requirement that is disabled, missing or circular is a start-up
    error in one line naming both plugins and the fix."""
    kernel = {name for name, _ in DEFAULT_PLUGINS}
    available = set(installed)
    missing: dict[str, list[str]] = {}
    for name, plugin in plugins.items():
        for needed in requirements(plugin):
            if needed not in plugins and not (needed in kernel and not blocked(needed)):
                missing.setdefault(needed, []).append(name)
    for needed, users in sorted(missing.items()):
        names = ", ".join(f"'{u}'" for u in sorted(users))
        off = " and ".join(f"`{u} = false`" for u in sorted(users))
        if needed in available and blocked(needed):
            raise ConfigError(
                f"plugin {names} requires plugin '{needed}', which is disabled; set "
                f"`{needed} = true` (or also {off}) under [default.plugins]"
            )
        raise ConfigError(
            f"plugin {names} requires plugin '{needed}', which is not installed; install "
            f"it or set {off} under [default.plugins]"
        )
    order: list[str] = []
    placed: set[str] = set()
    visiting: list[str] = []

    def place(name: str) -> None:
        if name in placed:
            return
        if name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(name):], name])
            raise ConfigError(f"plugins require each other in a circle: {cycle}")
        visiting.append(name)
        for needed in requirements(plugins[name]):
            if needed in plugins:
                place(needed)
        visiting.pop()
        placed.add(name)
        order.append(name)

    for name in plugins:
        place(name)
    return order


def switches_without(*names: str) -> dict[str, bool]:
    """``[plugins]`` switches that disable ``names`` and every installed plugin that
    requires one of them, directly or not (for tests and tools that run a subset)."""
    requires = {n: requirements(ep.load()) for n, ep in entry_points().items()}
    off = set(names)
    grew = True
    while grew:
        grew = False
        for name, needed in requires.items():
            if name not in off and off.intersection(needed):
                off.add(name)
                grew = True
    return {name: False for name in sorted(off)}


def _extra_name(plugin: object) -> str:
    name = getattr(plugin, "PLUGIN_NAME", None) or getattr(plugin, "__name__", None)
    return str(name or id(plugin))


def plugin_name(pm: pluggy.PluginManager, plugin: object) -> str:
    return pm.get_name(plugin) or repr(plugin)


def describe_plugins(pm: pluggy.PluginManager, settings: Any) -> list[PluginInfo]:
    """Every known plugin, enabled or not, with its version and implemented hooks."""
    switches = plugin_switches(settings)
    infos: list[PluginInfo] = []
    dists = {ep.name: ep for ep in entry_points().values()}
    seen: set[str] = set()
    for plugin in pm.get_plugins():
        name = plugin_name(pm, plugin)
        seen.add(name)
        hooks = tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or ()))
        ep = dists.get(name)
        version = ep.dist.version if ep is not None and ep.dist is not None else _kernel_version()
        infos.append(
            PluginInfo(name, version, True, name in ESSENTIAL_PLUGINS,
                       ep.value if ep else getattr(plugin, "__name__", repr(plugin)), hooks)
        )
    for name, module in DEFAULT_PLUGINS:
        if name not in seen:
            infos.append(PluginInfo(name, _kernel_version(), False, False, module, ()))
            seen.add(name)
    for name, ep in dists.items():
        if name not in seen:
            version = ep.dist.version if ep.dist is not None else "?"
            infos.append(PluginInfo(name, version, switches.get(name, True), False, ep.value, ()))
    return sorted(infos, key=lambda i: (not i.essential, i.name))


def _kernel_version() -> str:
    from . import __version__

    return __version__


def blocked_tables(pm: pluggy.PluginManager) -> list[str]:
    """Settings tables of installed-but-disabled plugins (not validated)."""
    names = {name for name, _ in DEFAULT_PLUGINS} | set(entry_points())
    return [n for n in names if pm.is_blocked(n)]


def validators_by_owner(pm: pluggy.PluginManager) -> Mapping[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for impl in pm.hook.sc_settings_validators.get_hookimpls():
        out.setdefault(impl.plugin_name, []).extend(impl.function() or ())  # type: ignore[arg-type]
    return out
