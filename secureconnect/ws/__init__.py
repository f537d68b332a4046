"""The WebSocket gateway: one socket per client carries every realtime feature.

``kernel.ws`` is a :class:`Gateway`; :mod:`secureconnect.ws.gateway` documents the
interfaces other parts use and maps the package's modules. Import the public names
from here or from ``secureconnect.ws.gateway`` (both stay stable).
"""

from .gateway import *  # noqa: F403 — the facade's public names, listed once there
from .gateway import __all__ as __all__
