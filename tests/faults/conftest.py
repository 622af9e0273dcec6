"""The fault suite's summary line, printed at the end of any session that ran fault tests."""

from __future__ import annotations

from .helpers import TALLY

LABELS = (
    ("kills", "SIGKILLs"),
    ("fuzz", "fuzzed audio files"),
    ("concurrent", "concurrent worker runs"),
    ("disk_full", "full-disk runs"),
    ("bad_input", "bad inputs"),
    ("stale", "stale or foreign outputs"),
)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not TALLY:
        return
    stats = terminalreporter.stats
    faults = [
        r for key in ("failed", "error") for r in stats.get(key, []) if "faults" in getattr(r, "nodeid", "")
    ]
    parts = ", ".join(f"{TALLY[key]} {label}" for key, label in LABELS if TALLY[key])
    if faults:
        line = f"fault suite: {len(faults)} fault test(s) FAILED; survived so far: {parts}"
    else:
        checked = TALLY["outputs_checked"]
        outputs = f"{checked} outputs compared with uninterrupted runs: " if checked else ""
        line = f"fault suite: survived {parts}; {outputs}0 lost or corrupt outputs"
    terminalreporter.write_sep("=", line, bold=True, red=bool(faults), green=not faults)
