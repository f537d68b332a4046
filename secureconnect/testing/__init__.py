"""Test helpers for SecureConnect and its plugins (also shipped for third-party authors).

The pytest plugin :mod:`secureconnect.testing.pytest_plugin` is registered through the
``pytest11`` entry point and provides the ``sc_settings``, ``sc_app`` and ``sc_client``
fixtures; :class:`WsTester` waits for WebSocket events matching a predicate.
"""

from __future__ import annotations

from .helpers import WsTester, make_settings, merge_settings, wait_for

__all__ = ["WsTester", "make_settings", "merge_settings", "wait_for"]
