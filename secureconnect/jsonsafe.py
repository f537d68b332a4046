"""Client JSON, parsed within one cap: the same function reads REST bodies and
WebSocket frames.

``loads(raw, max_depth=..., max_bytes=...)`` returns the document, or raises
:class:`JsonRejected` (a ``ValueError``) naming why: too large, not JSON, nested
deeper than ``max_depth`` (arrays and objects count one level each), or carrying a
string that is not valid Unicode (a lone surrogate such as ``"\\ud800"``, which
cannot be stored or encoded). ``code`` is the stable problem code to answer with.
Never raises ``RecursionError``.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: the default of ``http.max_json_depth``
DEFAULT_MAX_DEPTH = 32

_SURROGATE = re.compile("[\ud800-\udfff]")


class JsonRejected(ValueError):
    """The document was refused; ``code`` is ``payload_too_large``,
    ``malformed_json``, ``json_too_deep`` or ``invalid_unicode``."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def loads(raw: bytes | str, *, max_depth: int = DEFAULT_MAX_DEPTH,
          max_bytes: int | None = None) -> Any:
    if max_bytes is not None and len(raw) > max_bytes:
        raise JsonRejected(f"the document has {len(raw)} bytes; at most {max_bytes} are "
                           f"accepted", "payload_too_large")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise JsonRejected(f"the document is nested deeper than {max_depth} levels",
                           "json_too_deep") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JsonRejected(f"the body is not valid JSON: {exc}", "malformed_json") from None
    check(data, max_depth=max_depth)
    return data


def check(data: Any, *, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
    """Walk a parsed document (iteratively): depth and string validity."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            _check_str(value)
        elif isinstance(value, dict):
            if depth > max_depth:
                raise _too_deep(max_depth)
            for key, item in value.items():
                _check_str(key)
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            if depth > max_depth:
                raise _too_deep(max_depth)
            stack.extend((item, depth + 1) for item in value)


def valid_unicode(text: str) -> bool:
    """False for a string holding a lone surrogate (not encodable as UTF-8)."""
    return _SURROGATE.search(text) is None


def _check_str(text: str) -> None:
    if _SURROGATE.search(text) is not None:
        raise JsonRejected("a string holds a lone UTF-16 surrogate (not valid Unicode)",
                           "invalid_unicode")


def _too_deep(max_depth: int) -> JsonRejected:
    return JsonRejected(f"the document is nested deeper than {max_depth} levels",
                        "json_too_deep")
