"""The report's description of the run itself: "Machine and run" at the top (the machine,
the software, the data, what else kept the CPU busy), and "Skipped variants" and
"Configuration" at the end."""

from __future__ import annotations

from typing import Any

from benchmarks.report_parts import DASH, Section, Table, num, text
from benchmarks.schema import Environment, Report
from runtime.choice import Choice


def header_section(report: Report) -> Section:
    env = report.environment
    flags = ", ".join(name for name, on in env.flags.items() if on)
    if env.flags and not flags:
        flags = f"none of {', '.join(env.flags)}"
    machine = (env.cpu or DASH) + (f" ({env.machine})" if env.machine else "")
    revision = (env.git.revision or DASH) + (" (uncommitted changes)" if env.git.dirty else "")
    packages = ", ".join(f"{k} {v}" for k, v in env.packages.items())
    facts = [
        ("Machine", f"{machine}, {text(env.cores)} cores"),
        ("int8 dot product", _capability(env)),
        ("CPU flags", flags or DASH),
        ('precision="auto"', _choice_fact(report.choice)),
        ("OS", text(env.os)),
        ("Python", text(env.python) + (f"; {packages}" if packages else "")),
        ("Git revision", revision),
        ("Data", _data_fact(report)),
        ("Baseline for speedups", text(report.baseline)),
        ("Created", f"{text(report.created)} in {num(report.wall_seconds, 0)} s"),
        ("Other processes", _load_fact(report.other_cores, env.cores)),
    ]
    return Section("Machine and run", facts=facts)


def _load_fact(other_cores: float | None, cores: int | None) -> str:
    """How much of the machine other processes took while this report measured it."""
    if other_cores is None:
        return "not measured (no /proc/stat)"
    return f"kept {other_cores:.2f} of {text(cores)} cores busy on average during the run"


def _capability(env: Environment) -> str:
    capability = env.int8_capability or DASH
    arch = env.microarchitecture
    return f"{capability} ({arch})" if arch and arch != "unknown" else capability


def _choice_fact(choice: Choice | None) -> str:
    """What the runtime picks on this machine (`runtime.choice`), and why."""
    if choice is None:
        return "not measured (the bundle has no golden tiles)"
    return f"{choice.file} on {choice.backend}: {choice.reason}"


def _data_fact(report: Report) -> str:
    accuracy = report.accuracy
    data = (accuracy.data if accuracy else None) or report.config.get("data") or DASH
    if accuracy is None:
        return str(data)
    labels = "with labels" if accuracy.has_labels else "no labels"
    return f"{data}, {len(accuracy.images)} images, {labels}"


def skipped_section(report: Report) -> Section | None:
    if not report.skipped:
        return None
    rows = [(s.name, s.reason) for s in report.skipped]
    return Section("Skipped variants", tables=[Table(("variant", "reason"), rows, "ll")])


def config_section(report: Report) -> Section | None:
    if not report.config:
        return None
    return Section("Configuration", facts=[(k, _plain(v)) for k, v in report.config.items()])


def _plain(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items()) or DASH
    if isinstance(value, list | tuple):
        return ", ".join(_plain(v) for v in value) or DASH
    return text(value)
