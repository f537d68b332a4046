"""REST handlers of the drive (../shared/API.md "drive"): parse → service → serialise."""

from __future__ import annotations

import uuid

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from secureconnect.http.context import principal
from secureconnect.http.handlers import json_response
from secureconnect.routing import RouteTable

from .runtime import runtime
from .service import FileNotFound, Reservation

routes = RouteTable(tag="drive")

SHA256 = r"^[0-9a-fA-F]{64}$"


class ReserveIn(BaseModel):
    """A new file: quota is reserved now; upload to `upload_url`, then `complete`."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field(min_length=1, max_length=4096)
    #: bytes, exactly (at least 1); the stored object must match it
    size: StrictInt = Field(ge=1)
    content_type: StrictStr = Field(min_length=3, max_length=255)
    #: lower-case hex SHA-256 of the content; verified on complete when given
    sha256: StrictStr | None = Field(default=None, pattern=SHA256)
    #: end-to-end encrypted content: no sniffing, no previews
    is_encrypted: StrictBool = False
    #: S3 back end: upload in parts (POST .../parts for URLs); local: use tus instead
    multipart: StrictBool = False


class FileOut(BaseModel):
    id: str
    owner_id: str
    name: str
    size: int
    content_type: str
    sha256: str | None
    is_encrypted: bool
    #: pending (reserved, not verified) or ready
    status: str
    #: single, multipart or tus
    upload: str
    created_at: str | None
    completed_at: str | None
    expires_at: str | None


class MultipartOut(BaseModel):
    part_size: int
    part_count: int


class ReservationOut(BaseModel):
    file: FileOut
    #: presigned PUT (null for multipart uploads)
    upload_url: str | None
    expires_at: str | None
    multipart: MultipartOut | None = None


class FileListOut(BaseModel):
    items: list[FileOut]
    #: pass as `before` for the next (older) page; null on the last page
    next_cursor: str | None


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=50, ge=1, le=1000)
    before: uuid.UUID | None = None


class DownloadOut(BaseModel):
    url: str
    expires_at: str | None
    content_disposition: str


class QuotaOut(BaseModel):
    used: int
    limit: int


class PartsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    part_numbers: list[StrictInt] = Field(min_length=1, max_length=1000)


class PartUrlOut(BaseModel):
    part_number: int
    url: str


class PartUrlsOut(BaseModel):
    parts: list[PartUrlOut]
    expires_at: str | None


class UploadedPartOut(BaseModel):
    part_number: int
    size: int
    etag: str


class UploadedPartsOut(BaseModel):
    part_size: int
    part_count: int
    parts: list[UploadedPartOut]


class ShareIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conversation_id: uuid.UUID


class ShareOut(BaseModel):
    file_id: str
    conversation_id: str
    shared_by: str
    message_id: str | None
    created_at: str | None


class ShareListOut(BaseModel):
    items: list[ShareOut]


def _user(request: web.Request) -> str:
    return str(principal(request).user_id)


def _id(request: web.Request, name: str = "file_id") -> str:
    try:
        return str(uuid.UUID(request.match_info[name]))
    except ValueError:
        raise FileNotFound("no such file") from None


@routes.post("/v1/drive/files", body=ReserveIn, response=ReservationOut, status=201,
             extra_responses={413: "over max_file_size", 415: "content type refused",
                              507: "quota_exceeded ({used, limit})"})
async def reserve(request: web.Request, body: ReserveIn) -> web.StreamResponse:
    """Reserve quota for a file and get a presigned upload URL."""
    file, upload = await runtime(request).drive.reserve(
        _user(request), Reservation(**body.model_dump()))
    return json_response({"file": file, **upload}, status=201)


@routes.post("/v1/drive/files/{file_id}/complete", response=FileOut,
             extra_responses={404: "no such file", 409: "upload_incomplete",
                              422: "upload_mismatch (object deleted, quota released)"})
async def complete(request: web.Request) -> web.StreamResponse:
    """Verify the stored object (size, SHA-256, image type); the file becomes ready."""
    return json_response(await runtime(request).drive.complete(_user(request), _id(request)))


@routes.get("/v1/drive/files", response=FileListOut, query=ListQuery)
async def list_files(request: web.Request, query: ListQuery) -> web.StreamResponse:
    """The caller's files, newest first."""
    before = None if query.before is None else str(query.before)
    page = await runtime(request).drive.list(_user(request), query.limit, before)
    return json_response(page)


@routes.get("/v1/drive/files/{file_id}", response=FileOut,
            extra_responses={404: "no such file (or not visible to the caller)"})
async def get_file(request: web.Request) -> web.StreamResponse:
    """One file (own, or shared into a conversation of the caller)."""
    return json_response(await runtime(request).drive.get(_user(request), _id(request)))


@routes.get("/v1/drive/files/{file_id}/download", response=DownloadOut,
            extra_responses={404: "no such file", 409: "upload_incomplete"})
async def download(request: web.Request) -> web.StreamResponse:
    """A presigned download URL (Content-Disposition attachment, RFC 6266)."""
    return json_response(await runtime(request).drive.download(_user(request), _id(request)))


@routes.delete("/v1/drive/files/{file_id}", status=204,
               extra_responses={404: "no such file (owner only)"})
async def delete_file(request: web.Request) -> web.StreamResponse:
    """Delete a file (owner only); its quota is freed."""
    await runtime(request).drive.delete(_user(request), _id(request))
    return web.Response(status=204)


@routes.get("/v1/drive/quota", response=QuotaOut)
async def quota(request: web.Request) -> web.StreamResponse:
    """Bytes used (reserved and stored) and the caller's limit."""
    return json_response(await runtime(request).drive.quota(_user(request)))


@routes.post("/v1/drive/files/{file_id}/parts", body=PartsIn, response=PartUrlsOut,
             extra_responses={409: "not a pending multipart upload"})
async def part_urls(request: web.Request, body: PartsIn) -> web.StreamResponse:
    """Presigned URLs for parts of a multipart upload (S3 back end)."""
    out = await runtime(request).drive.part_urls(_user(request), _id(request),
                                                 list(body.part_numbers))
    return json_response(out)


@routes.get("/v1/drive/files/{file_id}/parts", response=UploadedPartsOut,
            extra_responses={409: "not a pending multipart upload"})
async def uploaded_parts(request: web.Request) -> web.StreamResponse:
    """Parts already stored (S3 ListParts): resume by uploading the missing ones."""
    return json_response(await runtime(request).drive.uploaded_parts(_user(request),
                                                                     _id(request)))


@routes.post("/v1/drive/files/{file_id}/shares", body=ShareIn, response=ShareOut, status=201,
             extra_responses={403: "not_a_participant", 404: "no such file",
                              409: "file not complete"})
async def share(request: web.Request, body: ShareIn) -> web.StreamResponse:
    """Share a file into a conversation of the owner; posts a `file` message."""
    out, created = await runtime(request).sharing.share(
        _user(request), _id(request), str(body.conversation_id))
    return json_response(out, status=201 if created else 200)


@routes.get("/v1/drive/files/{file_id}/shares", response=ShareListOut)
async def list_shares(request: web.Request) -> web.StreamResponse:
    """Conversations the file is shared into (owner only)."""
    items = await runtime(request).sharing.list_shares(_user(request), _id(request))
    return json_response({"items": items})


@routes.delete("/v1/drive/files/{file_id}/shares/{conversation_id}", status=204,
               extra_responses={404: "no such file or share"})
async def unshare(request: web.Request) -> web.StreamResponse:
    """Stop sharing a file into a conversation."""
    await runtime(request).sharing.unshare(_user(request), _id(request),
                                           _id(request, "conversation_id"))
    return web.Response(status=204)
