"""The one place that calls plugin hooks, with one ordering rule.

Order
-----
Every hook's implementations run in **plugin order**: the kernel's default plugins
first (``DEFAULT_PLUGINS``), then the installed feature plugins sorted so that each
comes after the plugins it ``REQUIRES`` (ties by name), then plugins handed to
``create_app(plugins=[...])`` in the order given. Within that, implementations marked
``@hookimpl(tryfirst=True)`` run before all others and ``trylast=True`` after all
others. The same rule holds for registration hooks (so cleanup contexts open in plugin
order and close in reverse) and runtime hooks (so guards run in plugin order).

How a hook is called
--------------------
* :func:`collect` — registration hooks (sync, return data): the results flattened
  into ``(plugin name, item)`` pairs.
* :func:`notify` — observers: every implementation runs; an exception is logged and
  counted in ``plugin_hook_errors_total`` and never reaches the caller.
* :func:`guard` — veto/rewrite hooks ("will be" hooks): each implementation sees the
  previous one's rewrite; a :class:`~secureconnect.kernel.Veto` or an exception stops
  the chain and refuses the action (fail closed).
* :func:`vote` — permission hooks: deny by default; allowed only when at least one
  implementation says ``True`` and none says ``False``; an exception counts as ``False``.
* :func:`call` — results of every implementation in order; exceptions propagate.

Coroutines handed back by implementations are always awaited. With the setting
``logging.trace_plugins`` every call is logged at DEBUG (hook, plugin, outcome).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .kernel import Kernel

log = logging.getLogger(__name__)


def plugin_order(pm: pluggy.PluginManager) -> dict[str, int]:
    """Plugin name → position in plugin order (registration order: ``plugins.py``
    registers plugins already sorted by the rule above)."""
    return {name: i for i, (name, _) in enumerate(pm.list_name_plugin())}


def ordered(pm: pluggy.PluginManager, impls: list[pluggy.HookImpl]) -> list[pluggy.HookImpl]:
    """``impls`` in call order: tryfirst, then the rest, then trylast, each group in
    plugin order."""
    position = plugin_order(pm)

    def key(impl: pluggy.HookImpl) -> tuple[int, int]:
        group = 0 if impl.tryfirst else 2 if impl.trylast else 1
        return group, position.get(impl.plugin_name, len(position))

    return sorted((i for i in impls if not i.hookwrapper and not i.wrapper), key=key)


class HookOrder:
    """Per-application cache of each hook's call order (worked out again only when the
    registrations of that hook changed)."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._cache: dict[str, tuple[list[pluggy.HookImpl], list[pluggy.HookImpl]]] = {}

    def __call__(self, name: str) -> list[pluggy.HookImpl]:
        caller = getattr(self.pm.hook, name, None)
        if caller is None:  # a hook whose spec is not added (its plugin is disabled)
            return []
        impls = caller.get_hookimpls()
        cached = self._cache.get(name)
        if cached is not None and cached[0] == impls:
            return cached[1]
        result = ordered(self.pm, impls)
        self._cache[name] = (impls, result)
        return result


async def call_impl(kernel: Kernel, impl: pluggy.HookImpl, name: str, **kwargs: Any) -> Any:
    """Call one implementation with the arguments it names (``kernel`` added); await
    what it hands back. Datasette's lesson: every coroutine must be awaited."""
    kwargs.setdefault("kernel", kernel)
    result = impl.function(**{a: kwargs[a] for a in impl.argnames})
    if inspect.isawaitable(result):
        result = await result
    if kernel.trace_hooks:
        log.debug("hook %s: plugin %r returned %r", name, impl.plugin_name, result)
    return result


def _counted_failure(kernel: Kernel, name: str, impl: pluggy.HookImpl) -> None:
    kernel.http_metrics.hook_errors.labels(name, impl.plugin_name).inc()


def collect(kernel: Kernel, name: str) -> list[tuple[str, Any]]:
    """Call a registration hook and flatten the results into ``(plugin, item)`` pairs;
    a dict result gives ``(plugin, (key, value))`` pairs. ``None`` results are skipped."""
    out: list[tuple[str, Any]] = []
    for impl in kernel.hook_order(name):
        args = {"kernel": kernel, "pm": kernel.pm}
        result: Any = impl.function(**{a: args[a] for a in impl.argnames})
        if kernel.trace_hooks:
            log.debug("hook %s: plugin %r registered %r", name, impl.plugin_name, result)
        if result is None:
            continue
        items = result.items() if isinstance(result, dict) else result
        out.extend((impl.plugin_name, item) for item in items)
    return out


async def call(kernel: Kernel, name: str, **kwargs: Any) -> list[Any]:
    """Every implementation's result in call order; exceptions propagate."""
    return [await call_impl(kernel, impl, name, **kwargs) for impl in kernel.hook_order(name)]


async def notify(kernel: Kernel, name: str, **kwargs: Any) -> None:
    """Call an observe-only hook: each implementation's failure is logged and counted
    and never reaches the caller."""
    for impl in kernel.hook_order(name):
        try:
            await call_impl(kernel, impl, name, **kwargs)
        except Exception:
            _counted_failure(kernel, name, impl)
            log.exception("plugin %r failed in %s", impl.plugin_name, name)


@dataclass
class GuardRefused(Exception):
    """A guard refused. ``veto`` is what the plugin returned, ``error`` what it raised
    (both ``None`` when it returned something a guard may not return)."""

    plugin: str
    veto: Any = None
    error: BaseException | None = None


Rewrite = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


def _replace(_value: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    return result


async def guard(
    kernel: Kernel,
    name: str,
    value: dict[str, Any],
    *,
    arg: str,
    is_veto: Callable[[Any], bool],
    rewrite: Rewrite = _replace,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run a veto/rewrite hook. Each implementation gets a copy of the current
    ``value`` as argument ``arg``; ``None`` lets it through unchanged, a dict rewrites
    it for the next one (``rewrite(value, result)`` says how; it may raise
    :class:`GuardRefused`), a veto (``is_veto``) or an exception raises
    :class:`GuardRefused` — fail closed. Returns the final value."""
    for impl in kernel.hook_order(name):
        try:
            result = await call_impl(kernel, impl, name, **{arg: dict(value)}, **kwargs)
        except Exception as exc:
            _counted_failure(kernel, name, impl)
            log.warning("guard %r refused in %s by raising %s (guards fail closed)",
                        impl.plugin_name, name, type(exc).__name__, exc_info=True)
            raise GuardRefused(impl.plugin_name, error=exc) from None
        if result is None:
            continue
        if is_veto(result):
            raise GuardRefused(impl.plugin_name, veto=result)
        if not isinstance(result, dict):
            log.error("guard %r returned a %s from %s: refused (expected None, a veto or "
                      "a dict)", impl.plugin_name, type(result).__name__, name)
            raise GuardRefused(impl.plugin_name)
        value = rewrite(value, result)
    return value


async def vote(kernel: Kernel, name: str, **kwargs: Any) -> bool:
    """Deny by default: ``True`` only when some implementation says ``True`` and none
    says ``False``; ``None`` abstains; an exception counts as ``False``."""
    allowed = False
    for impl in kernel.hook_order(name):
        try:
            answer = await call_impl(kernel, impl, name, **kwargs)
        except Exception:
            _counted_failure(kernel, name, impl)
            log.exception("plugin %r failed in %s (counted as a refusal)",
                          impl.plugin_name, name)
            return False
        if answer is False:
            return False
        if answer is True:
            allowed = True
    return allowed
