"""The local back end's signed URLs: ``PUT``/``GET /v1/drive/blobs/{file_id}``.

No access token: the HMAC signature in the query (method, id, expiry, max size) is the
authorisation (:mod:`.signing`); tampered or expired → 403. The PUT body is streamed to
disk and cut off past the reserved size (413, nothing kept); each read has an idle
timeout instead of a whole-request deadline, so large uploads on slow links work.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from secureconnect.errors import NotFound
from secureconnect.routing import NO_TIMEOUT, RouteTable

from .runtime import runtime
from .signing import verify
from .storage.local import canonical_id
from .tus import UploadInterrupted
from .validation import content_disposition

routes = RouteTable(tag="drive")

CHUNK = 256 * 1024


async def body_chunks(request: web.Request, idle_timeout: float) -> AsyncIterator[bytes]:
    """The request body in chunks; raises ``TimeoutError`` when the client stalls."""
    stream = request.content
    while True:
        async with asyncio.timeout(idle_timeout):
            chunk = await stream.readany()
        if not chunk:
            return
        yield chunk


def _blob_id(request: web.Request) -> str:
    try:
        return canonical_id(request.match_info["file_id"])
    except ValueError:
        raise NotFound("no such file", code="file_not_found") from None


@routes.put("/v1/drive/blobs/{file_id}", auth=False, timeout=NO_TIMEOUT,
            extra_responses={403: "invalid_signature / url_expired", 409: "upload_complete",
                             413: "body larger than reserved"})
async def put_blob(request: web.Request) -> web.StreamResponse:
    """Upload through a signed URL (local back end)."""
    rt = runtime(request)
    assert rt.local is not None
    file_id = _blob_id(request)
    max_size = verify(rt.local.secret, "PUT", file_id, dict(request.query))
    if request.content_length is not None and request.content_length > max_size:
        raise rt.local.too_large(max_size)
    # claimed before the status check: complete cannot verify (and mark ready) a file
    # whose body is still being received
    with rt.local.claim(file_id):
        await rt.drive.pending_upload(file_id, max_size)
        try:
            written = await rt.local.write(
                file_id, body_chunks(request, rt.drive.s.upload_idle_timeout), max_size)
        except (TimeoutError, aiohttp.ClientPayloadError, ConnectionError) as exc:
            # nothing is kept; the client PUTs again with the same URL
            raise UploadInterrupted(exc) from exc
    return web.Response(status=200, headers={"X-Stored-Bytes": str(written)})


@routes.get("/v1/drive/blobs/{file_id}", auth=False, timeout=NO_TIMEOUT,
            extra_responses={403: "invalid_signature / url_expired", 404: "no such file"})
async def get_blob(request: web.Request) -> web.StreamResponse:
    """Download through a signed URL (local back end)."""
    rt = runtime(request)
    assert rt.local is not None
    file_id = _blob_id(request)
    query = dict(request.query)
    verify(rt.local.secret, "GET", file_id, query)
    # Download URLs are minted for ready files only, and a ready file is never
    # rewritten; a deleted one is gone from disk. So the signed name and type suffice.
    if "name" in query and "type" in query:
        disposition, content_type = query["name"], query["type"]
    else:
        row = await rt.drive.ready_file(file_id)
        disposition, content_type = content_disposition(row.name), row.content_type
    path = rt.local.path(file_id)
    if not path.exists():
        raise NotFound("no such file", code="file_not_found")
    return web.FileResponse(path, headers={
        "Content-Type": content_type,
        "Content-Disposition": disposition,
        "Cache-Control": "private, no-store",
        "X-Content-Type-Options": "nosniff",
    })
