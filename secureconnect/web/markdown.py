"""A small Markdown-to-HTML renderer for the project's own docs (``/docs/websocket``).

It understands what ``docs/*.md`` use: ATX headings, paragraphs, fenced code blocks,
pipe tables, ``-``/``*``/``1.`` lists, ``inline code``, ``**bold**``, ``*italic*`` and
``[links](url)``. Every piece of text is HTML-escaped first; link targets are kept only
when relative or http(s), so the output is safe to insert in a page.
"""

from __future__ import annotations

import html
import re

_INLINE_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_LIST = re.compile(r"^\s*(?:[-*]|\d+\.)\s+(.*)$")
_TABLE_RULE = re.compile(r"^\|?\s*:?-{3,}")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def inline(text: str) -> str:
    codes: list[str] = []

    def keep(m: re.Match[str]) -> str:
        codes.append(f"<code>{html.escape(m.group(1))}</code>")
        return f"\x00{len(codes) - 1}\x00"

    text = _INLINE_CODE.sub(keep, text)
    text = html.escape(text)
    text = _BOLD.sub(r"<strong>\1</strong>", text)
    text = _ITALIC.sub(r"<em>\1</em>", text)

    def link(m: re.Match[str]) -> str:
        target = html.unescape(m.group(2))
        if not (target.startswith(("/", "#", "http://", "https://")) or ":" not in target):
            return m.group(1)
        return f'<a href="{html.escape(target)}">{m.group(1)}</a>'

    text = _LINK.sub(link, text)
    return re.sub(r"\x00(\d+)\x00", lambda m: codes[int(m.group(1))], text)


def _cells(line: str) -> list[str]:
    line = line.strip().strip("|")
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)]


def render(text: str) -> str:
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    para: list[str] = []

    def flush() -> None:
        if para:
            out.append(f"<p>{inline(' '.join(para))}</p>")
            para.clear()

    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            flush()
            code: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                code.append(lines[i])
                i += 1
            out.append(f"<pre><code>{html.escape(chr(10).join(code))}</code></pre>")
        elif m := _HEADING.match(line):
            flush()
            level, title = len(m.group(1)), m.group(2)
            out.append(f'<h{level} id="{_slug(title)}">{inline(title)}</h{level}>')
        elif line.startswith("|") and i + 1 < len(lines) and _TABLE_RULE.match(lines[i + 1]):
            flush()
            head = "".join(f"<th>{inline(c)}</th>" for c in _cells(line))
            rows: list[str] = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append("<tr>" + "".join(f"<td>{inline(c)}</td>"
                                             for c in _cells(lines[i])) + "</tr>")
                i += 1
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}"
                       "</tbody></table>")
            continue
        elif _LIST.match(line):
            flush()
            items: list[str] = []
            while i < len(lines) and (m := _LIST.match(lines[i])):
                item = [m.group(1)]
                i += 1
                while i < len(lines) and lines[i].startswith("  ") and not _LIST.match(lines[i]):
                    item.append(lines[i].strip())
                    i += 1
                items.append(f"<li>{inline(' '.join(item))}</li>")
            out.append(f"<ul>{''.join(items)}</ul>")
            continue
        elif not line.strip():
            flush()
        else:
            para.append(line.strip())
        i += 1
    flush()
    return "\n".join(out)
