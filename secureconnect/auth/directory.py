"""The user directory: public profiles, lookup by exact email, name search, profile edits.

* A public profile is ``{id, display_name, avatar_file_id, presence}`` — never the
  email, the role or any date. ``presence`` comes from the first plugin answering
  ``sc_user_presence`` (chat), ``None`` without one.
* Lookup by email is an exact match of the normalised address (0 or 1 result); the
  route counts it against its own rate-limit class (``user_lookup``) so the directory
  cannot be used to enumerate accounts quickly.
* Name search is a case-insensitive display-name prefix among the users who share
  something with the caller — the union of every plugin's ``sc_user_contacts``
  answer (the kernel knows no conversation). Pages are ordered by (lower-cased
  name, id) and continue from an opaque cursor.

No aiohttp here: :mod:`.directory_routes` parses and serialises.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, or_, select, update

from ..errors import NotFound, ValidationFailed
from ..hooks import call_impl
from . import models as m

if TYPE_CHECKING:
    from ..kernel import Kernel
    from .service import Principal

log = logging.getLogger(__name__)

#: the most contact ids one search considers (a bound on the ``IN`` list)
MAX_CONTACTS = 20_000
_SQL_CHUNK = 500
#: ``avatar_file_id`` left unchanged by :meth:`Directory.update_profile`
UNCHANGED: Any = object()


@dataclass(frozen=True)
class Profile:
    id: str
    display_name: str
    avatar_file_id: str | None
    presence: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "display_name": self.display_name,
            "avatar_file_id": self.avatar_file_id,
            "presence": self.presence,
        }


@dataclass(frozen=True)
class ProfilePage:
    users: list[Profile]
    next_cursor: str | None


def _canonical_id(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _cursor(name: str, user_id: str) -> str:
    raw = json.dumps([name, user_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _uncursor(cursor: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        name, user_id = json.loads(raw)
        if isinstance(name, str) and isinstance(user_id, str):
            return name, user_id
    except (ValueError, binascii.Error, TypeError):
        pass
    raise ValidationFailed("cursor is not one this server returned", code="invalid_cursor",
                           status=422)


def _like_prefix(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%"


class Directory:
    """Accounts as other users see them (stateless: built where needed)."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    # -- reads ---------------------------------------------------------------------------
    async def profile(self, user_id: str) -> Profile:
        """The public profile, or 404 ``user_not_found`` (also for malformed ids)."""
        canonical = _canonical_id(user_id)
        row = None
        if canonical is not None:
            async with self.kernel.db.connect() as conn:
                row = (await conn.execute(
                    select(m.users.c.id, m.users.c.display_name, m.users.c.avatar_file_id)
                    .where(m.users.c.id == canonical)
                )).first()
        if row is None:
            raise NotFound("no user with this id", code="user_not_found")
        return Profile(row.id, row.display_name, row.avatar_file_id,
                       await self.presence(row.id))

    async def find_by_email(self, email: str) -> list[Profile]:
        """Exact match of the normalised address: zero or one profile (no presence:
        a lookup by address should not also tell whether its owner is online)."""
        normalised = self.kernel.auth.normalise_email(email)
        async with self.kernel.db.connect() as conn:
            row = (await conn.execute(
                select(m.users.c.id, m.users.c.display_name, m.users.c.avatar_file_id)
                .where(m.users.c.email == normalised)
            )).first()
        return [] if row is None else [Profile(row.id, row.display_name, row.avatar_file_id)]

    async def search(
        self, caller: str, text: str, *, limit: int, cursor: str | None = None
    ) -> ProfilePage:
        """Display-name prefix (case-insensitive) among the caller's contacts."""
        prefix = " ".join(text.split()).lower()
        if not prefix:
            raise ValidationFailed("q must not be blank", code="invalid_query", status=422)
        after = _uncursor(cursor) if cursor else None
        contacts = sorted(await self.contacts(caller))
        if not contacts:
            return ProfilePage([], None)
        lowered = func.lower(m.users.c.display_name)
        found: list[Any] = []
        # the contacts are split in chunks (bounded IN lists); each chunk's first
        # `limit + 1` matches are merged and the page cut from the merged order
        for start in range(0, len(contacts), _SQL_CHUNK):
            chunk = contacts[start:start + _SQL_CHUNK]
            query = (
                select(m.users.c.id, m.users.c.display_name, m.users.c.avatar_file_id,
                       lowered.label("key"))
                .where(m.users.c.id.in_(chunk), lowered.like(_like_prefix(prefix), escape="\\"))
                .order_by(lowered, m.users.c.id)
                .limit(limit + 1)
            )
            if after is not None:
                query = query.where(or_(lowered > after[0],
                                        and_(lowered == after[0], m.users.c.id > after[1])))
            async with self.kernel.db.connect() as conn:
                found += (await conn.execute(query)).all()
        found.sort(key=lambda r: (r.key, r.id))
        page = found[:limit]
        next_cursor = _cursor(page[-1].key, page[-1].id) if len(found) > limit else None
        return ProfilePage(
            [Profile(r.id, r.display_name, r.avatar_file_id) for r in page], next_cursor
        )

    async def contacts(self, user_id: str) -> set[str]:
        """The union of every plugin's ``sc_user_contacts`` answer, the user removed."""
        out: set[str] = set()
        async for answer in self._answers("sc_user_contacts", user_id=user_id):
            out.update(str(u) for u in _bounded(answer, MAX_CONTACTS - len(out)))
            if len(out) >= MAX_CONTACTS:
                log.warning("user %s has over %d contacts; the search sees the first ones",
                            user_id, MAX_CONTACTS)
                break
        out.discard(user_id)
        return out

    async def presence(self, user_id: str) -> dict[str, Any] | None:
        async for answer in self._answers("sc_user_presence", user_id=user_id):
            return dict(answer)
        return None

    async def _answers(self, name: str, **kwargs: Any) -> AsyncIterator[Any]:
        """Each implementation's non-``None`` answer in call order; a failing plugin
        is logged and counted (``plugin_hook_errors_total``) and skipped."""
        for impl in self.kernel.hook_order(name):
            try:
                answer = await call_impl(self.kernel, impl, name, **kwargs)
            except Exception:
                self.kernel.http_metrics.hook_errors.labels(name, impl.plugin_name).inc()
                log.exception("plugin %r failed in %s", impl.plugin_name, name)
                continue
            if answer is not None:
                yield answer

    # -- writes --------------------------------------------------------------------------
    async def update_profile(
        self,
        principal: Principal,
        *,
        display_name: str | None = None,
        avatar_file_id: Any = UNCHANGED,
    ) -> Profile:
        """Change the caller's display name and/or picture (``avatar_file_id=None``
        removes the picture). Returns the new public profile."""
        values: dict[str, Any] = {}
        if display_name is not None:
            values["display_name"] = self.kernel.auth.clean_display_name(display_name)
        if avatar_file_id is not UNCHANGED:
            if avatar_file_id is None:
                values["avatar_file_id"] = None
            else:
                canonical = _canonical_id(str(avatar_file_id))
                if canonical is None:
                    raise ValidationFailed("avatar_file_id must be a file id (a UUID) or null",
                                           code="invalid_avatar_file_id", status=422)
                values["avatar_file_id"] = canonical
        user_id = str(principal.user_id)
        if values:
            async with self.kernel.db.connect() as conn:
                await conn.execute(update(m.users).where(m.users.c.id == user_id).values(**values))
        return await self.profile(user_id)


def _bounded(ids: Iterable[Any], room: int) -> Iterable[Any]:
    for n, value in enumerate(ids):
        if n >= room:
            return
        yield value
