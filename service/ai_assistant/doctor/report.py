"""What a check found, the report of all of them, and how it is printed."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.text import Text

RUNBOOK = "docs/runbooks/doctor.md"
# Its sections, one per kind of check (tests/service/test_doctor.py keeps them and the page's headings equal).
SECTIONS = frozenset(
    {
        "config",
        "state-store",
        "queue",
        "engine",
        "engine-probe",
        "knowledge-store",
        "answer-cache",
        "connectors",
        "tls",
        "clock-skew",
        "disk-space",
    }
)


class Status(StrEnum):
    PASS = "pass"  # noqa: S105 (a status, not a password)
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"  # not applicable to this configuration, or impossible because something it needs failed


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    summary: str  # what was found, one line
    advice: str = ""  # what to do about a warning or failure
    anchor: str = ""  # section of the doctor runbook
    details: dict[str, Any] = field(default_factory=dict)  # numbers for scripts (latencies, counts, days)

    def __post_init__(self) -> None:
        if self.anchor and self.anchor not in SECTIONS:
            raise ValueError(f"no section {self.anchor!r} in {RUNBOOK}")

    @property
    def runbook(self) -> str:
        return f"{RUNBOOK}#{self.anchor}" if self.anchor else ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": str(self.status),
            "summary": self.summary,
            "advice": self.advice,
            "runbook": self.runbook,
            "details": self.details,
        }


@dataclass(frozen=True)
class Report:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        """Nothing failed (warnings are for a person to read, not a reason for a script to stop)."""
        return all(c.status is not Status.FAIL for c in self.checks)

    def counts(self) -> dict[str, int]:
        return {s.value: sum(1 for c in self.checks if c.status is s) for s in Status}

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "counts": self.counts(), "checks": [c.as_dict() for c in self.checks]}


_LOOK = {
    Status.PASS: ("PASS", "green"),
    Status.WARN: ("WARN", "yellow"),
    Status.FAIL: ("FAIL", "bold red"),
    Status.SKIP: ("SKIP", "dim"),
}


def render(report: Report, console: Console) -> None:
    width = max(len(c.name) for c in report.checks)
    for check in report.checks:
        label, style = _LOOK[check.status]
        console.print(Text.assemble((label, style), "  ", (check.name.ljust(width), "bold"), "  ", check.summary))
        if check.status in (Status.WARN, Status.FAIL) and (check.advice or check.runbook):
            hint = check.advice + (f" (see {check.runbook})" if check.runbook else "")
            console.print(Text(" " * (6 + width) + "→ " + hint, style="dim"))
    counts = report.counts()
    console.print(
        Text(
            f"{counts['pass']} passed, {counts['warn']} warning(s), {counts['fail']} failed, {counts['skip']} skipped",
            style="green" if report.ok else "bold red",
        )
    )


def one_line(exc: BaseException | str) -> str:
    """An error as one line, with the cause it wraps: httpx's "All connection attempts failed" hides the socket's own
    "Connection refused" one level down."""
    if not isinstance(exc, BaseException):
        return " ".join(exc.split())
    text = str(exc) or type(exc).__name__
    root: BaseException = exc
    for _ in range(5):
        nxt = root.__cause__ or root.__context__
        if nxt is None:
            break
        root = nxt
    if root is not exc and str(root) and str(root) not in text:
        text = f"{text} ({root})"
    return " ".join(text.split())
