"""Web panels: what a plugin adds to the web client (``sc_web_panels``).

Contract: a :class:`WebPanel` names a folder of static files, the ES modules and
stylesheets every page loads from it, and the page it mounts on. The
kernel serves the folder read-only under ``/static/plugins/<name>/`` (no directory
listings, no path outside the folder) and lists the panels' files in the page, in
plugin order (:mod:`secureconnect.hooks`). Panel names are unique; a clash is a start-up error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import ConfigError

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_ORIGIN = re.compile(r"^(https?|wss?)://(\*\.)?[A-Za-z0-9.\-]+(:\d{1,5})?$|^(https?|wss?)://\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
_FILE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_./-]{0,199}$")


@dataclass(frozen=True)
class WebPanel:
    #: URL-safe name: files are served under ``/static/plugins/<name>/``
    name: str
    #: folder holding the panel's files
    static_dir: str | Path
    #: ES modules (relative to ``static_dir``) loaded with ``<script type="module">``
    scripts: tuple[str, ...] = ()
    #: stylesheets (relative to ``static_dir``)
    styles: tuple[str, ...] = ()
    #: the page it mounts on: the web client (``app``) or the admin console (``admin``)
    page: Literal["app", "admin"] = "app"
    #: a short human title (shown in the admin console's plugin list)
    title: str = ""
    #: further origins the panel's scripts connect to (``https://s3.example.com``);
    #: added to the pages' CSP ``connect-src``
    connect_src: tuple[str, ...] = ()
    owner: str = field(default="", compare=False)

    def url(self, file: str) -> str:
        return f"/static/plugins/{self.name}/{file}"


class PanelRegistry:
    """The panels of one app, checked at start-up."""

    def __init__(self, panels: Iterable[tuple[str, WebPanel]]) -> None:
        self.panels: dict[str, WebPanel] = {}
        for owner, panel in panels:
            self._add(owner, panel)

    def _add(self, owner: str, panel: WebPanel) -> None:
        if not _NAME.match(panel.name):
            raise ConfigError(f"plugin '{owner}': web panel name {panel.name!r} must be "
                              "1-40 lower-case letters, digits, '-' or '_'")
        if panel.name in self.panels:
            raise ConfigError(f"web panel {panel.name!r} is declared by both plugin "
                              f"'{self.panels[panel.name].owner}' and plugin '{owner}'; "
                              "rename one of them")
        root = Path(panel.static_dir)
        for file in (*panel.scripts, *panel.styles):
            if not _FILE.match(file) or ".." in file.split("/") or not (root / file).is_file():
                raise ConfigError(f"plugin '{owner}': web panel {panel.name!r} lists "
                                  f"{file!r}, which is not a file in {root}")
        for origin in panel.connect_src:
            if not _ORIGIN.match(origin):
                raise ConfigError(f"plugin '{owner}': web panel {panel.name!r} lists "
                                  f"connect_src {origin!r}, which is not an origin "
                                  "(scheme://host[:port])")
        self.panels[panel.name] = WebPanel(panel.name, root.resolve(), tuple(panel.scripts),
                                           tuple(panel.styles), panel.page, panel.title,
                                           tuple(panel.connect_src), owner)

    def connect_src(self) -> tuple[str, ...]:
        """Every panel's extra ``connect-src`` origins, once each, in plugin order."""
        return tuple(dict.fromkeys(o for p in self.panels.values() for o in p.connect_src))

    def for_page(self, page: str) -> list[WebPanel]:
        return [p for p in self.panels.values() if p.page == page]

    def file(self, name: str, path: str) -> Path | None:
        """The file ``path`` of panel ``name``, or ``None`` when it is not one."""
        panel = self.panels.get(name)
        if panel is None:
            return None
        return safe_file(Path(panel.static_dir), path)


def safe_file(root: Path, path: str) -> Path | None:
    """``root/path`` when it is a regular file inside ``root``; else ``None``."""
    if not _FILE.match(path) or ".." in path.split("/"):
        return None
    found = (root / path).resolve()
    if not found.is_file() or not found.is_relative_to(root.resolve()):
        return None
    return found
