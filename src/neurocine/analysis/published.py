"""Published cc2017 results and the table that sets a run beside them (docs/published.md).

:data:`PUBLISHED` holds only numbers read from a named source (docs/published.md §2 lists the
same rows; ``tests/test_published.py`` keeps the two in step). Each entry records, per metric
group, the protocol its paper's evaluation code uses, where that code was read; a group left out
is unknown. :func:`published_table` prints the entries and a run's row in the same columns and
marks each published cell † where its protocol differs from the run's, ? where it is unknown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

# (metrics.json key, header, protocol group)
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("ssim", "SSIM", "ssim"),
    ("psnr", "PSNR dB", "uint8"),
    ("frame_2way", "2-way frame", "nway"),
    ("frame_50way", "50-way frame", "nway"),
    ("video_2way", "2-way video", "nway"),
    ("video_50way", "50-way video", "nway"),
    ("clip_pcc", "CLIP-pcc", "clip_pcc"),
)
# Data modules whose runs are on cc2017 (the published table applies to them only).
CC2017_MODULES = ("cc2017", "mindvideo")
# n-way protocol of the unsuffixed metrics.json keys: the ground truth's top-3 classes.
NWAY_MINDVIDEO = "top-3 true classes"


@dataclass(frozen=True)
class PublishedResult:
    """One published row: a method's numbers on cc2017 and the protocols behind them.

    Parameters
    ----------
    method, subject : str
    values : dict
        Column key (:data:`COLUMNS`) → the published number.
    source : str
        Where the numbers were read.
    protocol : dict
        Protocol group ("ssim", "uint8", "nway", "clip_pcc") → protocol, as the paper's code
        runs it; a missing group is unknown.
    """

    method: str
    subject: str
    values: dict[str, float]
    source: str
    protocol: dict[str, str] = field(default_factory=dict)


# CLIP-pcc as Mind-Animator's evaluation code computes it (docs/published.md §1).
CLIP_PCC_MIND_ANIMATOR = "adjacent frames, 0 when VIFI-CLIP <= 0.6, CLIP ViT-B/32"
_MINDVIDEO = {"ssim": "mindvideo", "uint8": "truncate", "nway": NWAY_MINDVIDEO}
_MIND_ANIMATOR = {"ssim": "mindvideo", "nway": NWAY_MINDVIDEO, "clip_pcc": CLIP_PCC_MIND_ANIMATOR}
_MINDVIDEO_TABLE_1 = (
    "paper Table 1 (full model = subject 1), screenshot imgs/4.png in yusijin02/notes-MindVideo"
)
_MIND_ANIMATOR_README = "README image imgs/results2.png of Mind-Animator/Mind-Animator"

PUBLISHED: tuple[PublishedResult, ...] = (
    PublishedResult(
        "MinD-Video",
        "as stated",
        {"ssim": 0.19},
        "abstract, as in the README of jqin4749/MindVideo",
        _MINDVIDEO,
    ),
    PublishedResult(
        "MinD-Video",
        "1",
        {
            "ssim": 0.171,
            "frame_2way": 0.792,
            "frame_50way": 0.172,
            "video_2way": 0.853,
            "video_50way": 0.202,
        },
        _MINDVIDEO_TABLE_1,
        _MINDVIDEO,
    ),
    PublishedResult(
        "MinD-Video",
        "2",
        {
            "ssim": 0.171,
            "frame_2way": 0.784,
            "frame_50way": 0.158,
            "video_2way": 0.841,
            "video_50way": 0.173,
        },
        _MINDVIDEO_TABLE_1,
        _MINDVIDEO,
    ),
    PublishedResult(
        "MinD-Video",
        "3",
        {
            "ssim": 0.187,
            "frame_2way": 0.812,
            "frame_50way": 0.193,
            "video_2way": 0.846,
            "video_50way": 0.216,
        },
        _MINDVIDEO_TABLE_1,
        _MINDVIDEO,
    ),
    PublishedResult(
        "MinD-Video, by Mind-Animator",
        "1",
        {"psnr": 8.662, "clip_pcc": 0.408},
        f"row Chen of the {_MIND_ANIMATOR_README}",
        {"clip_pcc": CLIP_PCC_MIND_ANIMATOR},
    ),
    PublishedResult(
        "Mind-Animator",
        "1",
        {"ssim": 0.301, "psnr": 9.134, "frame_2way": 0.809, "video_2way": 0.837, "clip_pcc": 0.425},
        _MIND_ANIMATOR_README,
        _MIND_ANIMATOR,
    ),
    PublishedResult(
        "Mind-Animator",
        "2",
        {"ssim": 0.287, "psnr": 9.049, "frame_2way": 0.804, "video_2way": 0.832, "clip_pcc": 0.426},
        _MIND_ANIMATOR_README,
        _MIND_ANIMATOR,
    ),
    PublishedResult(
        "Mind-Animator",
        "3",
        {"ssim": 0.349, "psnr": 9.306, "frame_2way": 0.792, "video_2way": 0.833, "clip_pcc": 0.415},
        _MIND_ANIMATOR_README,
        _MIND_ANIMATOR,
    ),
    PublishedResult(
        "SemVideo",
        "CC2017, as stated",
        {"frame_2way": 0.838, "video_2way": 0.865, "video_50way": 0.264, "clip_pcc": 0.526},
        "project page, yang-minghan/SemVideo-Project-Page index.html",
    ),
)


def _cell(value: float | None, mark: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.2f}{mark}" if value > 2 else f"{value:.3f}{mark}"


def published_table(
    run_label: str,
    run_row: Mapping[str, float],
    run_protocol: Mapping[str, str],
    entries: tuple[PublishedResult, ...] = PUBLISHED,
) -> str:
    """Markdown: the published rows and the run's, in the columns of :data:`COLUMNS`.

    Parameters
    ----------
    run_label : str
        The run's row name.
    run_row : mapping
        The run's ``metrics.json`` row (``ssim``, ``video_50way``, ``clip_pcc``, …).
    run_protocol : mapping
        Protocol group → the run's protocol, in the terms of :attr:`PublishedResult.protocol`.
    entries : tuple of PublishedResult, default=PUBLISHED

    Returns
    -------
    str: the table and a line explaining † and ?.
    """
    lines = [
        "| | Subject | " + " | ".join(h for _, h, _ in COLUMNS) + " | Source |",
        "|---|---|" + "---:|" * len(COLUMNS) + "---|",
    ]
    for entry in entries:
        cells = []
        for key, _, group in COLUMNS:
            value = entry.values.get(key)
            theirs = entry.protocol.get(group)
            mark = ""
            if value is not None and theirs is None:
                mark = "?"
            elif value is not None and theirs != run_protocol.get(group):
                mark = "†"
            cells.append(_cell(value, mark))
        lines.append(
            f"| {entry.method} | {entry.subject} | " + " | ".join(cells) + f" | {entry.source} |"
        )
    ours = [_cell(run_row.get(key)) for key, _, _ in COLUMNS]
    lines.append(f"| **{run_label}** | this run | " + " | ".join(ours) + " | metrics.json |")
    protocol = "; ".join(f"{g}: {p}" for g, p in run_protocol.items())
    return (
        "\n".join(lines)
        + "\n\n- Published cc2017 results (docs/published.md). † the paper's protocol differs "
        f"from this run's ({protocol}); ? the paper's protocol is not known.\n"
    )
