"""The report's "Examples" section: the overlays (`benchmarks.plots.Example`), shown only
when there are any."""

from __future__ import annotations

from benchmarks.report_parts import Section
from benchmarks.schema import Report


def examples_section(report: Report) -> Section:
    """The overlays, one per Example; shown only when there are any."""
    return Section(
        "Examples",
        notes=[
            "Each row: the input, the ground truth, the float model's mask, the variant's mask, "
            "and in red the pixels where float and variant disagree. The first rows show the "
            "gated TFLite int8 model; the last, where it is another, the worst case: the image "
            "on which the gated int8 model (of any bundle, TFLite or ONNX) that agrees least "
            "with float agrees least."
        ],
        plots=["overlay_*"],
        only_with_plots=True,
    )
