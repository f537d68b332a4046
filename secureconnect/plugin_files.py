"""Single-file plugins for development: ``secureconnect serve --plugins-dir DIR``.

Every ``*.py`` file in the folder (not starting with ``_``) is imported as a plugin
module and registered as if installed; its name is its ``PLUGIN_NAME`` or the file's
stem (the settings table and ``[plugins]`` switch). For production, package the
plugin with an entry point (``secureconnect new-plugin``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from .errors import ConfigError

MODULE_PREFIX = "secureconnect_dev_plugins."


def load_plugin_files(folder: str | Path) -> list[ModuleType]:
    """The plugin modules of ``folder`` in name order; an import error is a
    :class:`ConfigError` naming the file."""
    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"--plugins-dir {path}: no such folder")
    modules = []
    for file in sorted(path.glob("*.py")):
        if file.name.startswith("_"):
            continue
        name = MODULE_PREFIX + file.stem
        spec = importlib.util.spec_from_file_location(name, file)
        if spec is None or spec.loader is None:
            raise ConfigError(f"plugin file {file} cannot be loaded")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # pydantic and dataclasses look their module up
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise ConfigError(
                f"plugin file {file} failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        if not getattr(module, "PLUGIN_NAME", None):
            module.PLUGIN_NAME = file.stem  # type: ignore[attr-defined]
        modules.append(module)
    return modules
