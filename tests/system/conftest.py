"""System trials (issue 22): one per fault class, against real services the test
stops, kills or delays. Each trial records ``(trial, lost)`` in its report; the table
of every trial (result, acknowledged messages lost) is printed at the end of the run,
under xdist too (the reports carry it to the controller)."""

from __future__ import annotations

from typing import Any

import pytest

TRIAL_KEY = "sc_trial"


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


def pytest_terminal_summary(terminalreporter: Any) -> None:
    rows: list[tuple[str, str, str, str, str]] = []
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "call":
                continue
            for key, value in getattr(report, "user_properties", ()):
                if key == TRIAL_KEY:
                    rows.append((value["trial"], report.outcome, str(value["acked"]),
                                 str(value["lost"]), value["note"]))
    if not rows:
        return
    rows.sort()
    head = ("trial", "result", "acked", "lost", "note")
    widths = [max(len(r[i]) for r in (*rows, head)) for i in range(5)]
    terminalreporter.section("system trials")
    for row in (head, *rows):
        terminalreporter.write_line("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
