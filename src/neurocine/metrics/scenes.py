"""Which clips the metrics keep: clips spanning a scene cut are left out (docs/design.md §10)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from neurocine.errors import DataError


def scene_mask(scene_ids: Iterable[str | bytes]) -> np.ndarray:
    """True for the clips to keep: those whose scene id has no "-" (a "-" marks a cut).

    Parameters
    ----------
    scene_ids : sequence of str (or bytes, decoded as UTF-8) of length N
        The ``/<split>/scene`` ids of the clips, in order (MinD-Video's ``remove_overlap``).

    Returns
    -------
    bool ndarray of shape (N,); index the per-clip arrays with it before every metric.
    """
    if isinstance(scene_ids, str | bytes):
        raise DataError("scene_ids must be a sequence of ids, got a single string")
    keep = []
    for sid in scene_ids:
        if isinstance(sid, bytes | np.bytes_):
            sid = sid.decode("utf-8")
        if not isinstance(sid, str):
            raise DataError(f"scene ids must be strings, got {type(sid).__name__}")
        keep.append("-" not in sid)
    return np.asarray(keep, dtype=bool)
