"""The report's "Whole images end to end" section (`benchmarks.endtoend`): the runtime on one
image against the interpreter alone, a fresh process's peak RSS per size, and a folder
through `runtime.predict`'s pipeline."""

from __future__ import annotations

from benchmarks.load import BUSY_CORES
from benchmarks.report_parts import DASH, Section, Table, num, ratio, text, times
from benchmarks.schema import Report, plural
from benchmarks.targets import folder_ceiling, folder_interpreter_ms


def _runs(count: int | None, tile: tuple[int, int] | None) -> str:
    """'2 x 256x512': interpreter runs x their input (height x width)."""
    return f"{text(count)} x {'x'.join(map(str, tile)) if tile else DASH}"


def end_to_end_section(report: Report) -> Section | None:
    e2e = report.end_to_end
    if not e2e.sizes:
        return None
    rows = [
        (
            e.variant,
            str(e.size),
            _runs(e.count, e.tile),
            str(e.batch),
            num(e.runtime_ms, 1),
            num(e.interpreter_ms, 1),
            times(ratio(e.runtime_ms, e.interpreter_ms)),
        )
        for e in sorted(e2e.sizes, key=lambda e: (e.variant, e.size))
    ]
    headers = (
        "variant",
        "image px",
        "runs x input",
        "batch",
        "runtime ms",
        "interpreter ms",
        "runtime / interpreter",
    )
    caption = f"One image, {plural(e2e.sizes[0].threads, 'thread')}, p50"
    tables = [Table(headers, rows, "lrlrrrr", caption=caption)]
    if e2e.memory:
        memory_rows = [
            (
                e.variant,
                text(e.size),
                num(e.max_memory_mb, 0),
                _runs(e.count, e.tile),
                num(e.first_inference_s, 3),
                num(e.peak_rss_mb, 1),
                e.error or "",
            )
            for e in e2e.memory
        ]
        headers = (
            "variant",
            "image px",
            "max_memory_mb",
            "runs x input",
            "first inference s",
            "peak RSS MB",
            "error",
        )
        caption = "A fresh process segmenting one image"
        tables.append(Table(headers, memory_rows, "lrrlrrl", caption=caption))
    if e2e.folder:
        single = {(e.variant, e.size): e for e in e2e.sizes}
        folder_rows = []
        for e in e2e.folder:
            one = single.get((e.variant, e.size))
            interpreter_ms = folder_interpreter_ms(e, one)
            ceiling = folder_ceiling(interpreter_ms, one.threads, e) if one else None
            folder_rows.append(
                (
                    e.variant,
                    f"{e.images} x {e.size} px",
                    num(e.images_per_s, 2),
                    num(ratio(1e3, interpreter_ms), 2),
                    num(e.pipeline_ms, 1),
                    str(e.cores or ""),
                    num(ceiling, 2),
                    num(e.other_cores, 2),
                )
            )
        headers = (
            "variant",
            "folder",
            "runtime.predict images/s",
            "interpreter images/s",
            "pipeline ms/image",
            "cores",
            "cores allow images/s",
            "other processes' cores",
        )
        caption = "A folder of PNGs through runtime.predict's pipeline"
        tables.append(Table(headers, folder_rows, "lrrrrrrr", caption=caption))
    budget = report.config.get("max_memory_mb")
    return Section(
        "Whole images end to end",
        tables=tables,
        notes=[
            "Runtime: Segmenter.predict on one image already in memory (pre-processing, the "
            "interpreter runs, stitching, threshold), against the interpreter alone on the same "
            "inputs, taking turns. A model that takes any size runs the whole image (padded to "
            "the pooling grid) when one run fits the memory budget"
            + (f" (max_memory_mb {budget:g})" if isinstance(budget, int | float) else "")
            + ", else the tiles that fit: 'runs x input' shows which. Peak RSS: a fresh "
            "process that imports the runtime, loads the model and segments one image of that "
            "size (VmHWM, MB = 10^6 bytes); an int8 model that needs more than the target for "
            "a 512 px image in one pass is measured again with a budget that tiles it. The "
            "folder: decoding, pre-processing and writing the PNG masks overlap the "
            "interpreter's runs; 'pipeline ms' is that work on one image, one stage after "
            "another, and 'cores allow' the interpreter's rate (timed between the folder's "
            "passes), or where its threads and that work need more than the cores, cores / "
            "(threads x interpreter + pipeline). Other processes' cores: the CPU other "
            f"processes took meanwhile; above {BUSY_CORES:g} the folder's target is not judged.",
        ],
    )
