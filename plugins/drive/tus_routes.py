"""tus 1.0 over HTTP at ``/v1/drive/uploads`` (local back end). Headers in, headers out;
the logic is in :mod:`.tus`."""

from __future__ import annotations

import uuid
from datetime import datetime
from email.utils import format_datetime

from aiohttp import web

from secureconnect.errors import BadRequest, Problem, UnsupportedMediaType
from secureconnect.http.context import principal
from secureconnect.routing import NO_TIMEOUT, RouteTable

from .blob_routes import body_chunks
from .runtime import runtime
from .service import FileNotFound
from .tus import CHECKSUMS, EXTENSIONS, TUS_VERSION, TusUploads, UploadState, parse_metadata

routes = RouteTable(tag="drive")


class TusVersionUnsupported(Problem):
    status, code, title = 412, "tus_version_unsupported", "Precondition Failed"


def _tus(request: web.Request) -> TusUploads:
    tus = runtime(request).tus
    if tus is None:
        raise FileNotFound("resumable uploads (tus) are served on the local back end only; "
                           "use multipart uploads on S3")
    return tus


def _check_version(request: web.Request) -> None:
    if request.headers.get("Tus-Resumable") != TUS_VERSION:
        raise TusVersionUnsupported(
            f"send Tus-Resumable: {TUS_VERSION}",
            headers={"Tus-Version": TUS_VERSION, "Tus-Resumable": TUS_VERSION})


def _upload_id(request: web.Request) -> str:
    try:
        return str(uuid.UUID(request.match_info["upload_id"]))
    except ValueError:
        raise FileNotFound("no such upload") from None


def _int_header(request: web.Request, name: str) -> int:
    raw = request.headers.get(name)
    if raw is None or not raw.isdigit():
        raise BadRequest(f"header {name} must be a non-negative integer",
                         code="invalid_tus_header")
    return int(raw)


def _headers(state: UploadState | None = None) -> dict[str, str]:
    out = {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store"}
    if state is not None:
        out["Upload-Offset"] = str(state.offset)
        out["Upload-Length"] = str(state.length)
        if state.expires_at:
            when = datetime.fromisoformat(state.expires_at.replace("Z", "+00:00"))
            out["Upload-Expires"] = format_datetime(when, usegmt=True)
    return out


@routes.route("OPTIONS", "/v1/drive/uploads", auth=False, status=204)
async def tus_options(request: web.Request) -> web.StreamResponse:
    """tus discovery: version, extensions, maximum size, checksum algorithms."""
    rt = runtime(request)
    return web.Response(status=204, headers={
        "Tus-Resumable": TUS_VERSION, "Tus-Version": TUS_VERSION,
        "Tus-Extension": EXTENSIONS, "Tus-Max-Size": str(rt.drive.s.max_file_size),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUMS)})


@routes.post("/v1/drive/uploads", status=201,
             extra_responses={400: "invalid_tus_header", 412: "Tus-Resumable missing",
                              413: "too large",
                              507: "quota_exceeded"})
async def tus_create(request: web.Request) -> web.StreamResponse:
    """tus creation: reserve quota for `Upload-Length` bytes → 201 Location."""
    _check_version(request)
    tus = _tus(request)
    if "Upload-Defer-Length" in request.headers:
        raise BadRequest("Upload-Defer-Length is not supported; send Upload-Length",
                         code="invalid_tus_header")
    length = _int_header(request, "Upload-Length")
    metadata = parse_metadata(request.headers.get("Upload-Metadata", ""))
    state = await tus.create(str(principal(request).user_id), length, metadata)
    headers = _headers(state)
    headers["Location"] = f"{runtime(request).drive.s.public_url}/v1/drive/uploads/{state.id}"
    return web.Response(status=201, headers=headers)


@routes.route("HEAD", "/v1/drive/uploads/{upload_id}",
              extra_responses={412: "Tus-Resumable missing"})
async def tus_head(request: web.Request) -> web.StreamResponse:
    """tus core: the server's offset (resume from here)."""
    _check_version(request)
    state = await _tus(request).state(str(principal(request).user_id), _upload_id(request))
    return web.Response(status=200, headers=_headers(state))


@routes.patch("/v1/drive/uploads/{upload_id}", timeout=NO_TIMEOUT, status=204,
              extra_responses={400: "invalid_tus_header", 409: "offset mismatch",
                               412: "Tus-Resumable missing", 415: "wrong content type",
                               423: "locked by another PATCH", 460: "checksum mismatch"})
async def tus_patch(request: web.Request) -> web.StreamResponse:
    """tus core: append bytes at `Upload-Offset` → 204 with the new offset."""
    _check_version(request)
    if request.content_type != "application/offset+octet-stream":
        raise UnsupportedMediaType("PATCH needs Content-Type application/offset+octet-stream")
    tus = _tus(request)
    offset = _int_header(request, "Upload-Offset")
    state = await tus.patch(
        str(principal(request).user_id), _upload_id(request), offset,
        body_chunks(request, runtime(request).drive.s.upload_idle_timeout),
        request.headers.get("Upload-Checksum"))
    return web.Response(status=204, headers=_headers(state))


@routes.delete("/v1/drive/uploads/{upload_id}", status=204,
               extra_responses={412: "Tus-Resumable missing"})
async def tus_delete(request: web.Request) -> web.StreamResponse:
    """tus termination: discard the upload and release its quota."""
    _check_version(request)
    await _tus(request).terminate(str(principal(request).user_id), _upload_id(request))
    return web.Response(status=204, headers={"Tus-Resumable": TUS_VERSION})
