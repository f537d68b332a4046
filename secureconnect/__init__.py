"""SecureConnect: a small aiohttp kernel with features as pluggy plugins.

Plugin authors need only this module::

    from secureconnect import hookimpl, Kernel, RouteTable, Problem, Veto, kernel_of

Everything a plugin needs is re-exported here: the hook marker, the ``Kernel`` and its
typed ``ServiceKey``, route declarations, problems, jobs and health checks, the
request helpers ``kernel_of``/``user_id_of``, and the shared table helpers
(``new_metadata``, ``UtcDateTime``, ``ID``, ``new_id``, ``utcnow``, ``rfc3339``).
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("secureconnect")

from .errors import (  # noqa: E402
    BadRequest,
    ConfigError,
    Conflict,
    Forbidden,
    NotFound,
    Problem,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    Unprocessable,
    ValidationFailed,
)
from .health import HealthCheck  # noqa: E402
from .http.context import kernel_of, user_id_of  # noqa: E402
from .jobs import Job  # noqa: E402
from .kernel import Kernel, ServiceKey, Veto  # noqa: E402
from .models import ID, UtcDateTime, new_id, new_metadata, rfc3339, utcnow  # noqa: E402
from .routing import Route, RouteTable  # noqa: E402

__all__ = [
    "ID",
    "BadRequest",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "HealthCheck",
    "Job",
    "Kernel",
    "NotFound",
    "Problem",
    "RateLimited",
    "Route",
    "RouteTable",
    "ServiceKey",
    "ServiceUnavailable",
    "Unauthorized",
    "Unprocessable",
    "UtcDateTime",
    "ValidationFailed",
    "Veto",
    "__version__",
    "hookimpl",
    "kernel_of",
    "new_id",
    "new_metadata",
    "rfc3339",
    "user_id_of",
    "utcnow",
]
