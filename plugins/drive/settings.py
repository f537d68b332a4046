"""The `[drive]` settings: their validators and the typed view the service reads.

Secrets (the URL signing key, S3 credentials) are read here like any other key but
belong in config/.secrets.toml or SECURECONNECT_DRIVE__* variables, never in
settings.toml; the kernel redacts them wherever settings are shown.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dynaconf import Validator

from secureconnect import ConfigError

Backend = Literal["local", "s3"]
MIN_SECRET_BYTES = 32
#: S3 refuses parts below 5 MiB (except the last) and above 5 GiB
S3_MIN_PART = 5 * 1024 * 1024
S3_MAX_PART = 5 * 1024 * 1024 * 1024


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def validators() -> list[Validator]:
    number = (int, float)
    return [
        Validator("drive.enabled", is_type_of=bool),
        Validator("drive.backend", is_in=("local", "s3")),
        Validator("drive.local_dir", is_type_of=str, len_min=1),
        Validator("drive.public_url", is_type_of=str),
        Validator("drive.url_secret", is_type_of=str),
        Validator("drive.max_file_size", is_type_of=int, gte=1, lte=5 * 1024**4),
        Validator("drive.default_quota", is_type_of=int, gte=0),
        Validator("drive.url_ttl", is_type_of=number, gte=1, lte=7 * 86400),
        Validator("drive.reservation_ttl", is_type_of=number, gte=1, lte=30 * 86400),
        Validator("drive.max_name_length", is_type_of=int, gte=16, lte=1024),
        Validator("drive.allowed_content_types", condition=_str_list,
                  messages={"condition": "{name} must be a list of strings"}),
        Validator("drive.denied_content_types", condition=_str_list,
                  messages={"condition": "{name} must be a list of strings"}),
        Validator("drive.list_max_limit", is_type_of=int, gte=1, lte=1000),
        Validator("drive.upload_idle_timeout", is_type_of=number, gt=0, lte=3600),
        Validator("drive.upload_lock_timeout", is_type_of=number, gt=0, lte=600),
        Validator("drive.multipart_part_size", is_type_of=int, gte=S3_MIN_PART, lte=S3_MAX_PART),
        Validator("drive.cleanup_interval", is_type_of=number, gte=1, lte=86400),
        Validator("drive.cleanup_batch_size", is_type_of=int, gte=1, lte=100000),
        Validator("drive.orphan_grace", is_type_of=number, gte=0, lte=30 * 86400),
        Validator("drive.s3_endpoint_url", is_type_of=str),
        Validator("drive.s3_bucket", is_type_of=str),
        Validator("drive.s3_region", is_type_of=str, len_min=1),
        Validator("drive.s3_prefix", is_type_of=str),
        Validator("drive.s3_access_key_id", is_type_of=str),
        Validator("drive.s3_secret_access_key", is_type_of=str),
        Validator("drive.s3_timeout", is_type_of=number, gt=0, lte=300),
        Validator("drive.s3_long_timeout", is_type_of=number, gt=0, lte=3600),
        Validator("drive.s3_retry_attempts", is_type_of=int, gte=1, lte=10),
    ]


@dataclass(frozen=True)
class DriveSettings:
    backend: Backend
    local_dir: Path
    public_url: str
    url_secret: bytes
    max_file_size: int
    default_quota: int
    url_ttl: float
    reservation_ttl: float
    max_name_length: int
    allowed_content_types: tuple[str, ...]
    denied_content_types: tuple[str, ...]
    list_max_limit: int
    upload_idle_timeout: float
    upload_lock_timeout: float
    multipart_part_size: int
    cleanup_interval: float
    cleanup_batch_size: int
    orphan_grace: float
    s3_endpoint_url: str
    s3_bucket: str
    s3_region: str
    s3_prefix: str
    s3_access_key_id: str
    s3_secret_access_key: str
    s3_timeout: float
    s3_long_timeout: float
    s3_retry_attempts: int

    @classmethod
    def from_settings(cls, settings: Any, environment: str = "development") -> DriveSettings:
        t = settings.drive
        local_dir = Path(str(t.local_dir))
        if not local_dir.is_absolute():
            local_dir = Path(str(settings.app.data_dir)) / local_dir
        secret = str(t.url_secret)
        if len(secret.encode()) < MIN_SECRET_BYTES:
            if environment == "production" and t.backend == "local":
                raise ConfigError(
                    "plugin 'drive': setting `drive.url_secret` is empty or shorter than "
                    f"{MIN_SECRET_BYTES} bytes; production refuses to sign upload URLs with "
                    "it. Generate one (python -c 'import secrets; "
                    "print(secrets.token_urlsafe(48))') and set it in config/.secrets.toml "
                    "or SECURECONNECT_DRIVE__URL_SECRET"
                )
            # Ephemeral: URLs signed by this process only (fine for one instance/tests).
            secret = secrets.token_urlsafe(48)
        if t.backend == "s3" and not str(t.s3_bucket):
            raise ConfigError(
                "plugin 'drive': `drive.backend` is \"s3\" but `drive.s3_bucket` is empty; "
                "set the bucket name (and `drive.s3_endpoint_url` for MinIO/moto)"
            )
        public_url = str(t.public_url) or str(settings.app.public_url)
        return cls(
            backend=t.backend,
            local_dir=local_dir,
            public_url=public_url.rstrip("/"),
            url_secret=secret.encode(),
            max_file_size=int(t.max_file_size),
            default_quota=int(t.default_quota),
            url_ttl=float(t.url_ttl),
            reservation_ttl=float(t.reservation_ttl),
            max_name_length=int(t.max_name_length),
            allowed_content_types=tuple(s.lower() for s in t.allowed_content_types),
            denied_content_types=tuple(s.lower() for s in t.denied_content_types),
            list_max_limit=int(t.list_max_limit),
            upload_idle_timeout=float(t.upload_idle_timeout),
            upload_lock_timeout=float(t.upload_lock_timeout),
            multipart_part_size=int(t.multipart_part_size),
            cleanup_interval=float(t.cleanup_interval),
            cleanup_batch_size=int(t.cleanup_batch_size),
            orphan_grace=float(t.orphan_grace),
            s3_endpoint_url=str(t.s3_endpoint_url),
            s3_bucket=str(t.s3_bucket),
            s3_region=str(t.s3_region),
            s3_prefix=str(t.s3_prefix),
            s3_access_key_id=str(t.s3_access_key_id),
            s3_secret_access_key=str(t.s3_secret_access_key),
            s3_timeout=float(t.s3_timeout),
            s3_long_timeout=float(t.s3_long_timeout),
            s3_retry_attempts=int(t.s3_retry_attempts),
        )
