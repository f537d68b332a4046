"""Settings: dynaconf loading, validation and redaction.

This module is the only place that reads the process environment. Order of
precedence (later wins): the shipped defaults (package data,
``secureconnect/defaults/settings.toml``) → the deployer's ``config/settings.toml``,
``config/.secrets.toml`` and ``config/settings.local.toml`` in the working directory
when present → files named in
``SECURECONNECT_SETTINGS_FILES`` (comma separated) → ``SECURECONNECT_*`` environment
variables (``SECURECONNECT_HTTP__REQUEST_TIMEOUT=5``) → ``overrides`` given in code.
The environment (``[development]``, ``[testing]``, ``[production]``) is chosen with
``SECURECONNECT_ENV`` (default ``development``).

Mistakes are never ignored: a TOML syntax error is one line naming the file, line and
column; a top-level table that is no environment (a bare ``[plugins]``) is refused with
the table it was probably meant to be; validation problems show the value and where it
came from (:func:`origin_of`).
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

from dynaconf import Dynaconf, ValidationError, Validator

from .errors import ConfigError

ENVVAR_PREFIX = "SECURECONNECT"
#: the shipped defaults, package data (a link to the source tree's config/settings.toml)
SHIPPED_SETTINGS = Path(__file__).resolve().parent / "defaults" / "settings.toml"
ENVIRONMENTS = ("development", "testing", "production")

# Process-level switches that are not settings keys.
_CONTROL_VARS = {"ENV", "SETTINGS_FILES", "LOAD_DOTENV"}
# a secret's name ends in one of these words (`jwt_secret`, `smtp_password`,
# `metrics.token`, `vapid_private_key`, `s3_access_key_id`, `credentials_json`), so
# `access_token_ttl` and `credentials_file` (a path) are shown
_SECRET_KEY = re.compile(
    r"(^|_)(secrets?|passwords?|passwd|tokens?|keys?|dsn|credentials?(_json)?|access_key_id)$",
    re.I,
)
_ORIGINS: weakref.WeakKeyDictionary[Any, dict[str, str]] = weakref.WeakKeyDictionary()

Settings: TypeAlias = Any  # a dynaconf.Dynaconf (untyped library)


def environ(name: str, default: str | None = None) -> str | None:
    """Read one process environment variable (the single sanctioned place)."""
    return os.environ.get(name, default)


def set_environ(values: Mapping[str, str]) -> None:
    """Set process environment variables (the single sanctioned place to write them):
    for native libraries that read their own variables when they load, e.g. the thread
    caps a worker process sets before importing its math libraries. Never settings."""
    os.environ.update(values)


def load_settings(
    files: Iterable[str | Path] = (),
    *,
    env: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Load settings as described in the module docstring. Each file is parsed first
    (a syntax error or a top-level table that is no environment stops here with the
    file's name); the plugins' validators run later in :func:`validate_settings`."""
    extra = [p for p in (environ(f"{ENVVAR_PREFIX}_SETTINGS_FILES") or "").split(",") if p]
    paths = [Path(p) for p in (*local_settings_files(), *files, *extra)]
    for p in paths:
        if not p.exists():
            raise ConfigError(f"settings file {p} does not exist; fix the path or remove it")
    chosen_env = env or environ(f"{ENVVAR_PREFIX}_ENV") or "development"
    if chosen_env not in ENVIRONMENTS:
        raise ConfigError(
            f"environment {chosen_env!r} is unknown; use one of {', '.join(ENVIRONMENTS)}"
        )
    shipped = read_settings_file(SHIPPED_SETTINGS)
    origins: dict[str, str] = {}
    for path in (SHIPPED_SETTINGS, *paths):
        data = shipped if path == SHIPPED_SETTINGS else read_settings_file(path)
        check_top_level(path, data, shipped)
        for env_name in ("default", chosen_env):
            for key, _ in _flatten(data.get(env_name) or {}):
                origins[key.lower()] = str(path)
    settings = Dynaconf(
        envvar_prefix=ENVVAR_PREFIX,
        settings_files=[str(p) for p in (SHIPPED_SETTINGS, *paths)],
        environments=True,
        env=chosen_env,
        env_switcher=f"{ENVVAR_PREFIX}_ENV",
        merge_enabled=True,
    )
    for name in os.environ:
        if name.startswith(f"{ENVVAR_PREFIX}_") and name[len(ENVVAR_PREFIX) + 1:] not in (
            _CONTROL_VARS
        ):
            key = name[len(ENVVAR_PREFIX) + 1:].lower().replace("__", ".")
            origins[key] = f"environment variable {name}"
    _ORIGINS[settings] = origins
    for key, value in _flatten(overrides or {}):
        override(settings, key, value)
    return settings


def override(settings: Settings, key: str, value: Any, origin: str = "code") -> None:
    """Set ``key`` (dotted) after loading, remembering where it came from."""
    settings.set(key, value)
    _ORIGINS.setdefault(settings, {})[key.lower()] = origin


def local_settings_files(base: Path | None = None) -> list[Path]:
    """The deployer's files beside the working directory, when present:
    ``config/settings.toml`` (unless it is the shipped file itself, as in a source
    checkout), ``config/.secrets.toml`` and ``config/settings.local.toml``."""
    folder = (base or Path.cwd()) / "config"
    found = []
    for name in ("settings.toml", ".secrets.toml", "settings.local.toml"):
        path = folder / name
        if path.exists() and not (name == "settings.toml" and _same(path, SHIPPED_SETTINGS)):
            found.append(path)
    return found


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def read_settings_file(path: Path) -> dict[str, Any]:
    """Parse one TOML settings file; a syntax error becomes one line naming the file,
    the line and the column."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        text = str(exc)
        where = re.search(r"\(at line (\d+), column (\d+)\)", text)
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", text) or "invalid TOML"
        if where:
            raise ConfigError(f"{path}:{where[1]}:{where[2]}: TOML syntax error: {reason} "
                              f"(line {where[1]}, column {where[2]})") from None
        raise ConfigError(f"{path}: TOML syntax error: {reason}") from None
    except OSError as exc:
        raise ConfigError(f"settings file {path} cannot be read: {exc.strerror}") from None


def check_top_level(path: Path, data: Mapping[str, Any], shipped: Mapping[str, Any]) -> None:
    """Every top-level table must be an environment (``[default.x]``,
    ``[production.x]``); a bare ``[plugins]`` would otherwise be silently ignored."""
    envs = ("default", *ENVIRONMENTS)
    tables = {str(k).lower() for k in (shipped.get("default") or {})}
    for key in data:
        name = str(key).lower()
        if name in envs or name.startswith("dynaconf"):
            continue
        value = data[key]
        inner = next(iter(value), None) if isinstance(value, Mapping) else None
        # `[prod.x]`, `[dev.x]` are abbreviations; `[develop.x]` a near miss
        close_env = [e for e in envs if len(name) >= 3 and e.startswith(name)] or (
            difflib.get_close_matches(name, envs, n=1, cutoff=0.6))
        if close_env and name not in tables:
            hint = f"[{close_env[0]}.{inner}]" if inner else f"[{close_env[0]}]"
        elif isinstance(value, Mapping):
            hint = f"[default.{name}]"
        else:
            hint = f"[default.<table>] {name} = ..."
        raise ConfigError(
            f"{path}: top-level `[{key}]` is neither an environment "
            f"({', '.join(envs)}) nor known, so it would be ignored; did you mean `{hint}`?"
        )


def origin_of(settings: Settings, key: str) -> str | None:
    """Where the value of ``key`` (dotted, e.g. ``server.port``) came from: a file, an
    environment variable or code; ``None`` when unknown."""
    origins = _ORIGINS.get(settings, {})
    key = key.lower()
    while key:
        if key in origins:
            return origins[key]
        key = key.rpartition(".")[0]
    return None


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
                problems.append(f"[{owner}] {_explain(settings, message)}")
        settings.validators.clear()
    free = {t.lower() for t in free_tables}
    problems += _unknown_keys(as_plain_dict(settings), known, free)
    if problems:
        raise ConfigError(
            "invalid settings:\n  - " + "\n  - ".join(problems) + "\n"
            "Fix it in your settings (config/settings.local.toml, config/.secrets.toml, a "
            "file in SECURECONNECT_SETTINGS_FILES) or the SECURECONNECT_* variables; "
            "`secureconnect check-config` shows the result."
        )


_DYNACONF_MESSAGE = re.compile(
    r"^(?P<name>\S+) must (?P<op>\w+) (?P<expected>.*?) but it is (?P<value>.*) in env \S+$",
    re.S,
)
_OPS = {"gte": ">=", "lte": "<=", "gt": ">", "lt": "<", "is_type_of": "of type",
        "is_in": "one of", "len_min": "at least this long:", "len_max": "at most this long:",
        "eq": "equal to", "ne": "other than"}


def _type_names(text: str) -> str:
    names = re.findall(r"<class '(?:\w+\.)*(\w+)'>", text)
    return " or ".join(names) if names else text


def _explain(settings: Settings, message: str) -> str:
    """dynaconf's "HTTP.port must is_type_of <class 'int'> but it is x in env main" →
    "setting `http.port` must be of type int but is 'x' (from FILE); set it in ..."."""
    parsed = _DYNACONF_MESSAGE.match(message)
    if parsed is None:
        name, _, rest = message.partition(" ")
        name = name.lower()
        value_text = ""
    else:
        name = parsed["name"].lower()
        op = parsed["op"]
        expected = _type_names(parsed["expected"]) if op == "is_type_of" else parsed["expected"]
        value = redact(settings.get(name), name.rpartition(".")[2])
        rest = f"must be {_OPS.get(op, op)} {expected}"
        value_text = f" but is {value!r}"
    origin = origin_of(settings, name)
    source = f" (from {origin})" if origin else ""
    env_var = f"{ENVVAR_PREFIX}_{name.upper().replace('.', '__')}"
    return f"setting `{name}` {rest}{value_text}{source}; fix it there or set {env_var}"


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
