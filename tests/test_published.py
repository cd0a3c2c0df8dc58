"""docs/published.md and neurocine.analysis.published hold the same numbers; the † / ? marks."""

from __future__ import annotations

from pathlib import Path

import pytest

from neurocine.analysis.published import COLUMNS, PUBLISHED, PublishedResult, published_table

DOC = Path(__file__).resolve().parents[1] / "docs" / "published.md"


def _doc_rows() -> dict[tuple[str, str], list[str]]:
    """Section 2's table: (method, subject) → the metric cells, in COLUMNS order."""
    text = DOC.read_text()
    section = text[text.index("## 2. Published numbers") : text.index("## 3.")]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == len(COLUMNS) + 3 and cells[0] not in ("Method", "---"):
            rows[(cells[0], cells[1])] = cells[2 : 2 + len(COLUMNS)]
    return rows


def test_the_doc_and_the_module_list_the_same_numbers():
    rows = _doc_rows()
    assert set(rows) == {(e.method, e.subject) for e in PUBLISHED}
    for entry in PUBLISHED:
        cells = rows[(entry.method, entry.subject)]
        for (key, _, _), cell in zip(COLUMNS, cells, strict=True):
            if key in entry.values:
                assert float(cell) == pytest.approx(entry.values[key]), (entry.method, key)
            else:
                assert cell == "–", (entry.method, key)
        repos = [word for word in entry.source.split() if "/" in word]
        assert repos and all(repo in DOC.read_text() for repo in repos)


def test_published_table_marks_protocol_differences():
    entries = (
        PublishedResult(
            "Same",
            "1",
            {"ssim": 0.2, "video_50way": 0.2},
            "here",
            {"ssim": "mindvideo", "nway": "top-3"},
        ),
        PublishedResult("Grey", "2", {"ssim": 0.3, "clip_pcc": 0.9}, "there", {"ssim": "neurons"}),
    )
    run = {"ssim": 0.25, "psnr": 9.5, "video_50way": 0.1, "clip_pcc": 0.8}
    table = published_table("NeuroCine", run, {"ssim": "mindvideo", "nway": "top-3"}, entries)
    lines = table.splitlines()
    same = next(line for line in lines if line.startswith("| Same"))
    grey = next(line for line in lines if line.startswith("| Grey"))
    ours = next(line for line in lines if line.startswith("| **NeuroCine**"))
    assert "| 0.200 |" in same and "†" not in same and "?" not in same
    assert "0.300†" in grey  # grey SSIM beside the run's RGB SSIM
    assert "0.900?" in grey  # CLIP-pcc protocol unknown
    assert "| 0.250 | 9.50 |" in ours and "| 0.800 |" in ours
    assert "ssim: mindvideo" in table


def test_the_published_rows_carry_their_papers_protocols():
    """A run under MinD-Video's protocols: its own table unmarked, Mind-Animator's CLIP-pcc †."""
    run_protocol = {
        "ssim": "mindvideo",
        "uint8": "truncate",
        "nway": "top-3 true classes",
        "clip_pcc": "adjacent frames, CLIP ViT-L/14",
    }
    lines = published_table("NeuroCine", {}, run_protocol).splitlines()
    mindvideo = next(line for line in lines if line.startswith("| MinD-Video | 1 |"))
    animator = next(line for line in lines if line.startswith("| Mind-Animator | 1 |"))
    assert "| 0.171 |" in mindvideo and "| 0.202 |" in mindvideo and "†" not in mindvideo
    assert "| 0.301 |" in animator and "| 0.809 |" in animator  # same SSIM and n-way code
    assert "9.13?" in animator  # how its frames became uint8 was not read
    assert "0.425†" in animator  # adjacent frames, gated at VIFI-CLIP 0.6, CLIP ViT-B/32
