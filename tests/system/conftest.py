"""System trials (issue 22): one per fault class, against real services the test
stops, kills or delays. Each trial records ``(trial, acked, lost)`` in its report;
``report.py`` prints the table of every trial at the end of the run."""

from __future__ import annotations

import pytest

from .report import TRIAL_KEY


class Trial:
    """What a trial reports: its name and how many acknowledged messages it lost."""

    def __init__(self, node: pytest.Item) -> None:
        self.node = node

    def record(self, name: str, *, acked: int, lost: int, note: str = "") -> None:
        self.node.user_properties.append(
            (TRIAL_KEY, {"trial": name, "acked": acked, "lost": lost, "note": note}))


@pytest.fixture
def trial(request: pytest.FixtureRequest) -> Trial:
    return Trial(request.node)
