# Hook specifications have docstrings for bodies; pluggy never runs them.
# mypy: disable-error-code="empty-body"
"""The hooks the video plugin offers other plugins (push, bots).

They exist while video is enabled; an implementation should be declared
``@hookimpl(optionalhook=True)`` so the implementing plugin still loads without video.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from secureconnect.hookspecs import hookspec

if TYPE_CHECKING:
    from secureconnect.kernel import Kernel


@hookspec
def sc_call_ringing(kernel: Kernel, call: dict[str, Any], callee_ids: list[str]) -> None:
    """A call started ringing for ``callee_ids`` (``call`` is the REST view of the call).

    Observe only (exceptions are logged and counted): the push plugin notifies the
    callees without a live socket (chat's ``Conversations.is_online`` tells which). Runs
    once, on the instance where the call was initiated, after ``call.ringing`` went out.
    A callee's ringing stops with ``call.ended`` or with their own ``call.left``.
    """
