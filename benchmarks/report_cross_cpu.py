"""The report's "Cross-CPU (emulated)" section: `make cross-cpu`'s result (the bundle's models
under qemu-user against this machine), also `make cross-cpu`'s own Markdown."""

from __future__ import annotations

from benchmarks.report_parts import DASH, Section, Table, num, pct
from benchmarks.schema import Report


def cross_cpu_section(report: Report) -> Section | None:
    result = report.cross_cpu
    if result is None:
        return None
    labels = {run.cpu: run.label for run in result.runs}
    verdict = {True: "ok", False: "FAIL", None: DASH}
    rows = [
        (
            labels.get(m.cpu, m.cpu),
            m.model,
            m.engine,
            pct(m.agreement, 2),
            num(m.max_probability_difference, 3),
            verdict[m.verified],
        )
        for m in result.models
    ]
    headers = ("emulated CPU", "model", "engine", "masks = here", "max prob diff", "verify")
    facts = [("this machine", result.host), ("measured", result.created)]
    facts += [
        (
            f"{run.label} (qemu -cpu {run.qemu_cpu})",
            f"seen as {run.seen_as}; perturbed int8 ONNX: verify exit {run.perturbed_exit}; "
            f"{run.seconds:.0f} s",
        )
        for run in result.runs
    ]
    note = (
        "The bundle's models on its golden tiles under qemu-user (`make cross-cpu`) against this "
        "machine. The control is the fp32 ONNX quantized with full-range int8 weights: the AVX2 "
        "kernels saturate on it, so its masks must differ on Haswell, which shows the emulated "
        "kernels ran. A copy of the bundle with perturbed int8 ONNX weights must fail "
        "runtime.verify (exit 1) on every CPU."
    )
    table = Table(headers, rows, "lllrrl")
    return Section("Cross-CPU (emulated)", facts=facts, tables=[table], notes=[note])
