# Hook specifications have docstrings for bodies; pluggy never runs them.
# mypy: disable-error-code="empty-body"
"""The hooks chat offers other plugins (added to the manager by chat's ``sc_addhooks``).

Implement them with ``from secureconnect import hookimpl``. They exist only while chat
is enabled; a plugin implementing them declares ``REQUIRES = ("chat",)``. How they are
called (order, errors) is the kernel's single rule in :mod:`secureconnect.hooks`:

* ``sc_message_will_be_sent`` is a **guard**: implementations run in call order, each
  sees the previous rewrite; a :class:`secureconnect.Veto` or an exception refuses the
  message (fail closed).
* The others are **observers**: every implementation runs; an exception is logged and
  counted in ``plugin_hook_errors_total`` and never fails the chat operation.
* Participant and conversation hooks run on **every instance** (chat relays them over
  the bus): ``local`` is ``True`` only on the instance where the change was made — do
  durable work (revoke a share, delete rows) there, and per-socket work (cut a call
  off) everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from secureconnect.hookspecs import hookspec

if TYPE_CHECKING:
    from secureconnect.kernel import Kernel


@hookspec
def sc_message_will_be_sent(kernel: Kernel, message: dict[str, Any]) -> Any:
    """A message is about to be persisted. Guard it.

    Return ``None`` to let it through, a :class:`secureconnect.Veto` to refuse it (the
    sender gets a 4xx carrying the veto's reason and code), or a new ``dict`` to
    rewrite it (only ``content`` and ``metadata`` are taken). Implementations run in
    call order (:mod:`secureconnect.hooks`), each seeing the previous rewrite. An
    exception refuses the message: guards fail closed.
    """


@hookspec
def sc_message_sent(kernel: Kernel, message: dict[str, Any]) -> None:
    """A message was persisted (and published). Observe only: push, AI, webhooks.

    Runs off the send path on the sending instance; exceptions are logged and counted,
    they never fail or slow the send.
    """


@hookspec
def sc_participant_added(
    kernel: Kernel, conversation_id: str, user_id: str, role: str, by: str, local: bool
) -> None:
    """``user_id`` joined the conversation (added by ``by``, or created it). Observe only.

    Runs on every instance; ``local`` is ``True`` where the change was made.
    """


@hookspec
def sc_participant_removed(
    kernel: Kernel, conversation_id: str, user_id: str, by: str, local: bool
) -> None:
    """``user_id`` left or was removed (``by`` is who did it; the same id when leaving).

    The user has already stopped receiving the conversation's events. Runs on every
    instance — end the user's call, drop their access to shared files — ``local`` is
    ``True`` where the change was made. Observe only.
    """


@hookspec
def sc_conversation_deleted(kernel: Kernel, conversation_id: str, local: bool) -> None:
    """The conversation is gone (its last participant left). Remove the plugin's data
    that belongs to it. Runs on every instance; ``local`` where it happened."""
