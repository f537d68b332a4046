"""SecureConnect: a small aiohttp kernel with features as pluggy plugins.

Plugin authors need only this module::

    from secureconnect import hookimpl, Kernel, RouteTable, Problem, Veto
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
from .jobs import Job  # noqa: E402
from .kernel import Kernel, Veto  # noqa: E402
from .routing import Route, RouteTable  # noqa: E402

__all__ = [
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
    "ServiceUnavailable",
    "Unauthorized",
    "Unprocessable",
    "ValidationFailed",
    "Veto",
    "__version__",
    "hookimpl",
]
