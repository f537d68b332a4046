"""Settings: dynaconf loading, validation and redaction.

This module is the only place that reads the process environment. Order of
precedence (later wins): the shipped ``config/settings.toml`` → ``config/.secrets.toml``
and ``config/settings.local.toml`` when present → files named in
``SECURECONNECT_SETTINGS_FILES`` (comma separated) → ``SECURECONNECT_*`` environment
variables (``SECURECONNECT_HTTP__REQUEST_TIMEOUT=5``) → ``overrides`` given in code.
The environment (``[development]``, ``[testing]``, ``[production]``) is chosen with
``SECURECONNECT_ENV`` (default ``development``).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

from dynaconf import Dynaconf, ValidationError, Validator

from .errors import ConfigError

ENVVAR_PREFIX = "SECURECONNECT"
CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
SHIPPED_SETTINGS = CONFIG_DIR / "settings.toml"
ENVIRONMENTS = ("development", "testing", "production")

# Process-level switches that are not settings keys.
_CONTROL_VARS = {"ENV", "SETTINGS_FILES", "LOAD_DOTENV"}
_SECRET_KEY = re.compile(r"(secret|password|passwd|token|api_?key|private_?key|credential)", re.I)

Settings: TypeAlias = Any  # a dynaconf.Dynaconf (untyped library)


def environ(name: str, default: str | None = None) -> str | None:
    """Read one process environment variable (the single sanctioned place)."""
    return os.environ.get(name, default)


def load_settings(
    files: Iterable[str | Path] = (),
    *,
    env: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Load settings as described in the module docstring. Nothing is validated here;
    :func:`validate_settings` runs once the plugins' validators are known."""
    extra = [p for p in (environ(f"{ENVVAR_PREFIX}_SETTINGS_FILES") or "").split(",") if p]
    paths = [SHIPPED_SETTINGS]
    paths += [p for p in (CONFIG_DIR / "settings.local.toml",) if p.exists()]
    paths += [Path(p) for p in (*files, *extra)]
    for p in paths:
        if not Path(p).exists():
            raise ConfigError(f"settings file {p} does not exist; fix the path or remove it")
    chosen_env = env or environ(f"{ENVVAR_PREFIX}_ENV") or "development"
    if chosen_env not in ENVIRONMENTS:
        raise ConfigError(
            f"environment {chosen_env!r} is unknown; use one of {', '.join(ENVIRONMENTS)}"
        )
    settings = Dynaconf(
        envvar_prefix=ENVVAR_PREFIX,
        settings_files=[str(p) for p in paths],
        secrets=str(CONFIG_DIR / ".secrets.toml"),
        environments=True,
        env=chosen_env,
        env_switcher=f"{ENVVAR_PREFIX}_ENV",
        merge_enabled=True,
    )
    for key, value in _flatten(overrides or {}):
        settings.set(key, value)
    return settings


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, f"{path}.")
        else:
            yield path, value


def as_plain_dict(settings: Settings) -> dict[str, Any]:
    """The settings as nested plain dicts with lower-case top-level keys."""
    out: dict[str, Any] = {}
    for key, value in settings.as_dict().items():
        if key.endswith("_FOR_DYNACONF") or key in _CONTROL_VARS:
            continue
        out[key.lower()] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def validate_settings(
    settings: Settings,
    validators: Mapping[str, Iterable[Validator]],
    *,
    free_tables: Iterable[str] = (),
) -> None:
    """Run every owner's validators and reject unknown keys, collecting all problems.

    ``validators`` maps an owner (``kernel``, a plugin name) to its validators.
    ``free_tables`` are top-level tables whose content is not checked (tables of
    disabled plugins). Raises :class:`ConfigError` listing each problem with its fix.
    """
    problems: list[str] = []
    known: set[str] = set()
    for owner, owned in validators.items():
        owned = list(owned)
        for v in owned:
            known.update(n.lower() for n in v.names)
        settings.validators.register(*owned)
        try:
            settings.validators.validate_all()
        except ValidationError as exc:
            for _validator, message in exc.details:
                problems.append(f"[{owner}] {_explain(message)}")
        settings.validators.clear()
    free = {t.lower() for t in free_tables}
    problems += _unknown_keys(as_plain_dict(settings), known, free)
    if problems:
        raise ConfigError(
            "invalid settings:\n  - " + "\n  - ".join(problems) + "\n"
            "Edit config/settings.toml (or your override file / SECURECONNECT_* variables)."
        )


def _explain(message: str) -> str:
    # dynaconf says "HTTP.request_timeout must gte 1 but it is 0 in env main"
    name, _, rest = message.partition(" ")
    name = name.lower()
    env_var = f"{ENVVAR_PREFIX}_{name.upper().replace('.', '__')}"
    rest = rest.replace("must gte", "must be >=").replace("must lte", "must be <=")
    rest = rest.replace("must is_type_of", "must be of type").replace(" in env main", "")
    return f"setting `{name}` {rest} (set it in settings.toml or {env_var})"


def _unknown_keys(data: Mapping[str, Any], known: set[str], free: set[str]) -> list[str]:
    prefixes = {k.rsplit(".", i)[0] for k in known for i in range(1, k.count(".") + 1)}
    problems: list[str] = []

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}".lower()
            if path in known:
                continue
            if path in prefixes and isinstance(value, Mapping):
                walk(value, f"{path}.")
                continue
            guess = difflib.get_close_matches(path, sorted(known | prefixes), n=1)
            hint = f"; did you mean `{guess[0]}`?" if guess else "; remove it"
            problems.append(f"setting `{path}` is unknown{hint}")

    for table, value in data.items():
        if table in free:
            continue
        if table in known or (table in prefixes and isinstance(value, Mapping)):
            if table not in known:
                walk(value, f"{table}.")
            continue
        guess = difflib.get_close_matches(table, sorted(p for p in prefixes if "." not in p), n=1)
        hint = f"; did you mean `[{guess[0]}]`?" if guess else "; remove it or enable its plugin"
        problems.append(f"settings table `[{table}]` is unknown{hint}")
    return problems


def redact(data: Any, key: str = "") -> Any:
    """Copy of ``data`` with secret-looking values replaced by ``"***"``."""
    if isinstance(data, Mapping):
        return {k: redact(v, str(k)) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [redact(v, key) for v in data]
    if _SECRET_KEY.search(key) and data not in ("", None):
        return "***"
    if isinstance(data, str) and "://" in data:
        return redact_url(data)
    return data


def redact_url(url: str) -> str:
    """``postgresql://user:pw@host/db`` → ``postgresql://user:***@host/db``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
