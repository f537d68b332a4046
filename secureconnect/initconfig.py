"""``secureconnect init``: a deployer's starting files in ``config/`` of a folder.

* ``config/settings.local.toml`` — the settings a deployment usually changes, each
  commented out with its shipped default and what it does.
* ``config/.secrets.toml`` — freshly generated secrets (JWT signing secret, TURN shared
  secret, the drive's URL-signing key, VAPID key pair for Web Push; a place for the AI
  provider's key), created with mode 0600.

In both files the tables of plugins that are not installed are written commented out
(an unknown table stops start-up).

Existing files are never overwritten unless ``force`` is given.
"""

from __future__ import annotations

import base64
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from .config import SHIPPED_SETTINGS, read_settings_file

LOCAL_SETTINGS = """\
# SecureConnect: this deployment's settings (written by `secureconnect init`).
# Loaded over the shipped defaults (`secureconnect check-config` shows the result).
# Tables must start with an environment: [default.<table>] for all, or
# [development.<table>] / [production.<table>]; choose it with SECURECONNECT_ENV.
# Secrets go in config/.secrets.toml (mode 0600), never here.

[default.app]
# public_url = "https://chat.example.org"   # base URL clients use (links in mails, uploads)
# data_dir = "data"                          # embedded database and files, created on first run

[default.server]
# host = "127.0.0.1"                         # bind address; 0.0.0.0 to listen on every interface
# port = 8080                                # bind port

[default.database]
# url = "postgresql+asyncpg://secureconnect@db/secureconnect"   # default: SQLite in data_dir

[default.redis]
# url = "redis://127.0.0.1:6379/0"           # needed for several instances; default: in-process

[default.http]
# behind_tls = true                          # behind a TLS-terminating proxy (adds HSTS)

[default.logging]
# format = "json"                            # text | json (production default: json)
# access_log = true                          # one line per request

[default.plugins]
# polls = false                              # switch an installed plugin off

[default.auth]
# mail_backend = "smtp"                      # outbox only logs mails (development)
# smtp_host = "smtp.example.org"
"""

#: per plugin: the settings a deployment usually changes (all commented out)
PLUGIN_SETTINGS = {
    "video": [
        '# stun_urls = ["stun:stun.example.org:3478"]          # STUN servers for clients',
        '# turn_urls = ["turn:turn.example.org:3478?transport=udp"]  # coturn (use-auth-secret)',
        "# max_participants = 50                     # joined participants per call",
    ],
    "push": [
        '# providers = ["webpush", "fcm", "apns"]   # default ["log"]: notifications only logged',
    ],
    "push.webpush": [
        '# vapid_subject = "mailto:ops@example.org" # required with webpush (RFC 8292)',
    ],
    "ai": [
        '# provider = "openai"                      # local (embedded model) | openai-compatible',
        '# openai_base_url = "http://127.0.0.1:11434"  # Ollama, vLLM, llama.cpp, a hosted API',
        '# openai_model = "llama3.1"',
    ],
    "drive": [
        '# backend = "s3"                            # local (default, under data_dir) | s3',
        '# s3_bucket = "secureconnect-files"         # required with backend = "s3"',
        '# s3_endpoint_url = "http://127.0.0.1:9000" # MinIO and others; "" = AWS',
        "# max_file_size = 5368709120                # bytes of one file (5 GiB)",
        "# default_quota = 10737418240               # bytes per user (10 GiB)",
    ],
}


def _table(name: str, lines: list[str], installed: set[str]) -> str:
    """``[default.NAME]`` with ``lines``; all commented out when the plugin owning the
    table is not installed (its table would stop start-up as unknown)."""
    body = [f"[default.{name}]", *lines]
    if name.split(".")[0] in installed:
        return "\n".join(body) + "\n"
    note = f"# (the {name.split('.')[0]} plugin is not installed: uncomment once it is)"
    return "\n".join([note, *(f"# {line}" for line in body)]) + "\n"


def local_settings_text(installed: set[str]) -> str:
    """The commented settings file: the kernel's tables, then the plugins'."""
    parts = [LOCAL_SETTINGS]
    parts += [_table(name, lines, installed) for name, lines in PLUGIN_SETTINGS.items()]
    return "\n".join(parts)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def vapid_key_pair() -> tuple[str, str]:
    """A P-256 key pair for Web Push (RFC 8292): (private, public) as base64url — the
    raw 32-byte private value and the 65-byte uncompressed public point."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_numbers().private_value.to_bytes(32, "big")
    public = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return _b64url(private), _b64url(public)


def secrets_text(installed_tables: set[str]) -> str:
    """The secrets file: a table is commented out when its plugin is not installed."""
    vapid_private, vapid_public = vapid_key_pair()
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def table(name: str, lines: list[str]) -> str:
        return _table(name, lines, installed_tables)

    return "\n".join([
        f"# Secrets of this deployment, generated by `secureconnect init` at {now}.",
        "# Keep this file private (mode 0600) and out of version control and shared backups.",
        "# Environment variables override it (SECURECONNECT_AUTH__JWT_SECRET, ...).",
        "",
        table("auth", [
            f'jwt_secret = "{secrets.token_urlsafe(48)}"  # signs access tokens (HS256)',
        ]),
        table("video", [
            f'turn_secret = "{secrets.token_urlsafe(32)}"  '
            "# give coturn the same value (static-auth-secret)",
        ]),
        table("drive", [
            f'url_secret = "{secrets.token_urlsafe(48)}"  '
            "# signs the local back end's upload/download URLs",
        ]),
        table("ai", [
            '# openai_api_key = ""  # the provider\'s key, when ai.provider = "openai"',
        ]),
        table("push.webpush", [
            f'vapid_private_key = "{vapid_private}"',
            f"# public key for clients' PushManager.subscribe: {vapid_public}",
        ]),
    ])


def installed_tables() -> set[str]:
    """Top-level tables of the shipped defaults (one per kernel part and plugin)."""
    return {str(k) for k in read_settings_file(SHIPPED_SETTINGS).get("default", {})}


def write_initial_files(folder: Path, *, force: bool = False) -> list[Path]:
    """Write ``config/settings.local.toml`` and ``config/.secrets.toml`` under
    ``folder``; raises :class:`FileExistsError` for an existing file unless ``force``."""
    config = folder / "config"
    local, secret = config / "settings.local.toml", config / ".secrets.toml"
    if not force:
        for path in (local, secret):
            if path.exists():
                raise FileExistsError(f"{path} exists; keep it, or run again with --force")
    config.mkdir(parents=True, exist_ok=True)
    installed = installed_tables()
    local.write_text(local_settings_text(installed))
    _write_private(secret, secrets_text(installed))
    return [local, secret]


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` readable by its owner only (0600 from the first byte)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(text)
