"""What the drive accepts: file names, content types, and declared images.

* :func:`clean_name` — Unicode NFC; path separators, control characters and
  format characters (bidi overrides) replaced; ``.``/``..`` and leading dots or
  trailing dots/spaces removed; Windows device names (``CON``, ``COM1`` ...) prefixed;
  length bounded in characters and UTF-8 bytes (extension kept). Never empty.
* :func:`check_content_type` — a bare ``type/subtype``; the deny list wins over the
  allow list; ``image/*`` patterns match a whole type.
* :func:`sniff_image` — the magic bytes of the formats we accept as images.
* :func:`content_disposition` — RFC 6266 ``attachment`` with an ASCII fallback and the
  exact name in ``filename*`` (RFC 8187).
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

from secureconnect.errors import Problem, UnsupportedMediaType

_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"COM{i}" for i in range(10)] + [f"LPT{i}" for i in range(10)]
    + ["COM¹", "COM²", "COM³", "LPT¹", "LPT²", "LPT³"]
)
_UNSAFE = re.compile(r'[/\\:*?"<>|]')
_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")
SNIFF_BYTES = 16


class InvalidFile(Problem):
    status, code, title = 422, "validation_error", "Validation Error"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}",
                         errors=[{"loc": [field], "msg": message, "type": "validation_error"}])


class ContentTypeRefused(UnsupportedMediaType):
    code = "content_type_not_allowed"


def clean_name(raw: str, max_length: int) -> str:
    name = unicodedata.normalize("NFC", raw)
    out = []
    for ch in name:
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp") or _UNSAFE.match(ch):
            out.append("_")
        else:
            out.append(ch)
    name = "".join(out).strip()
    name = name.lstrip(".").rstrip(". ")
    if not name:
        name = "file"
    # Windows treats "CON", "con.txt", "COM1.tar.gz" alike: the part before the first dot
    if name.split(".")[0].upper().rstrip() in _RESERVED:
        name = f"_{name}"
    return _bound(name, max_length)


def _bound(name: str, max_length: int) -> str:
    limit_bytes = max_length * 4
    if len(name) <= max_length and len(name.encode()) <= limit_bytes:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext) > 16:
        stem, ext, dot = name, "", ""
    suffix = f".{ext}" if dot else ""
    keep = max_length - len(suffix)
    stem = stem[:keep]
    while len((stem + suffix).encode()) > limit_bytes:
        stem = stem[:-1]
    return (stem.rstrip(". ") or "file") + suffix


def normalise_content_type(raw: str) -> str:
    value = raw.split(";", 1)[0].strip().lower()
    if not _CONTENT_TYPE.match(value):
        raise InvalidFile("content_type", f"{raw!r} is not a media type like 'image/png'")
    return value


def _matches(value: str, pattern: str) -> bool:
    if pattern.endswith("/*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def check_content_type(value: str, allowed: tuple[str, ...], denied: tuple[str, ...]) -> None:
    if any(_matches(value, p) for p in denied):
        raise ContentTypeRefused(f"content type {value!r} is not accepted by this server")
    if allowed and not any(_matches(value, p) for p in allowed):
        raise ContentTypeRefused(
            f"content type {value!r} is not accepted; allowed: {', '.join(allowed)}")


_MAGIC: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/bmp": (b"BM",),
    "image/tiff": (b"II*\x00", b"MM\x00*"),
    "image/x-icon": (b"\x00\x00\x01\x00",),
    "image/vnd.microsoft.icon": (b"\x00\x00\x01\x00",),
}


def sniff_matches(content_type: str, head: bytes) -> bool:
    """Does an upload declared as ``content_type`` start like one? Only images are
    checked; other types (and image formats we cannot recognise) are not refused."""
    if not content_type.startswith("image/"):
        return True
    if content_type == "image/webp":
        return head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    if content_type in ("image/avif", "image/heic", "image/heif"):
        return head[4:8] == b"ftyp"
    magic = _MAGIC.get(content_type)
    if magic is None:
        # an image type without a known signature: refuse rather than trust it
        return False
    return head.startswith(magic)


def content_disposition(name: str) -> str:
    fallback = "".join(
        ch if 0x20 <= ord(ch) < 0x7F and ch not in '"\\%;' else "_" for ch in name
    ) or "file"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
