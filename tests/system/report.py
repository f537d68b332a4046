"""The system trials' table: each trial records ``(trial, acked, lost, note)`` in its
report's ``user_properties``; the table of every trial is printed at the end of the
run (called from ``tests/conftest.py``, which the xdist controller loads too; the
reports carry the properties to it)."""

from __future__ import annotations

from typing import Any

TRIAL_KEY = "sc_trial"


def print_trials(terminalreporter: Any) -> None:
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
