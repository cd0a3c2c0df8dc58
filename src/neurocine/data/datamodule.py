"""FMRIVideoDataModule: a subject HDF5 file → (fMRI window, clip) pairs, augmented on the batch.

The clip shown at TR ``t`` is paired with the fMRI window of ``window`` TRs starting at
``t + lag_trs`` (docs/design.md §3). Windows never cross a run: at a run's end the window
repeats the run's last TR, and a TR whose response would start after the run's end has no sample.

Validation holds out the last ``val_runs`` training runs (whole runs: no neighbouring TR leaks
between training and validation); ``train_runs`` keeps only the first N of the others for
training (data-size sweeps; validation unchanged); testing uses the test split.

Reads are batched: the loader asks the dataset for a whole batch of indices at once
(``__getitems__``), which reads each needed HDF5 row once, in increasing order, and re-expands
duplicates (windows of neighbouring samples overlap). The file is opened lazily in each worker
process, so ``num_workers > 0`` and DDP are safe. A split's fMRI is held in memory only when it
is smaller than ``cache_limit_mb``; larger splits are read from disk batch by batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Sampler

from neurocine.data.augment import spatial_mask, temporal_interpolate
from neurocine.data.schema import validate
from neurocine.errors import ConfigError, SchemaError

EMBEDDINGS = ("clip_image", "clip_text")


@dataclass(frozen=True)
class WindowIndex:
    """Which rows of a split make each sample.

    Attributes
    ----------
    clip_rows : ndarray of shape (N,)
        Row of the clip (stimulus TR) of each sample.
    window_rows : ndarray of shape (N, W)
        fMRI rows of each sample's window.
    next_rows : ndarray of shape (N, W)
        The row after each window row within its run (itself at a run's end).
    """

    clip_rows: np.ndarray
    window_rows: np.ndarray
    next_rows: np.ndarray


def build_windows(run: np.ndarray, window: int, lag_trs: int, runs: np.ndarray) -> WindowIndex:
    """Cut the TRs of the selected ``runs`` into windows that never cross a run boundary.

    Parameters
    ----------
    run : ndarray of shape (T,)
        Run id per row of the split; rows of one run are contiguous and in time order.
    window : int
        TRs per window (``W``).
    lag_trs : int
        The window of the clip at row ``t`` starts at row ``t + lag_trs``.
    runs : ndarray
        Run ids to take samples from.
    """
    if window < 1 or lag_trs < 0:
        raise ConfigError(f"data.window={window}, data.lag_trs={lag_trs}: need window ≥ 1, lag ≥ 0")
    clips, windows, nexts = [], [], []
    for run_id in runs:
        rows = np.flatnonzero(run == run_id)
        first, last = int(rows[0]), int(rows[-1])
        starts = np.arange(first, last + 1 - lag_trs) + lag_trs
        offsets = starts[:, None] + np.arange(window)[None, :]
        win = np.minimum(offsets, last)
        clips.append(starts - lag_trs)
        windows.append(win)
        nexts.append(np.minimum(win + 1, last))
    if not clips:
        empty = np.zeros((0, window), dtype=np.int64)
        return WindowIndex(np.zeros(0, dtype=np.int64), empty, empty)
    return WindowIndex(
        np.concatenate(clips).astype(np.int64),
        np.concatenate(windows).astype(np.int64),
        np.concatenate(nexts).astype(np.int64),
    )


def ordered_runs(run: np.ndarray) -> np.ndarray:
    """Run ids in order of first appearance."""
    _, first = np.unique(run, return_index=True)
    return run[np.sort(first)]


def read_rows(dset: h5py.Dataset | np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Read ``dset[rows]`` for any int array ``rows`` (duplicates, any order) with one read.

    h5py needs increasing, unique indices; read each needed row once, then re-expand. When the
    rows are dense within their span a single slice read is cheaper than point selection.
    """
    flat = rows.reshape(-1)
    unique, inverse = np.unique(flat, return_inverse=True)
    lo, hi = int(unique[0]), int(unique[-1]) + 1
    if isinstance(dset, np.ndarray):
        block = dset[unique]
    elif hi - lo <= 4 * len(unique):
        block = dset[lo:hi][unique - lo]
    else:
        block = dset[unique]
    return block[inverse].reshape(*rows.shape, *block.shape[1:])


class SubjectWindows(Dataset):
    """Samples of one split: a batch read returns a dict of batched tensors.

    Parameters
    ----------
    path : str or Path
        Subject HDF5 file.
    split : str
        ``train`` or ``test``.
    index : WindowIndex
        The samples (rows) to serve.
    read_frames, read_clean, read_next : bool
        Whether to read the clips' frames, the noise-free fMRI, and the TR after each window TR
        (for temporal interpolation).
    cache_limit_mb : float
        Hold the split's fMRI in memory (per process) when it is smaller than this.
    """

    def __init__(
        self,
        path: str | Path,
        split: str,
        index: WindowIndex,
        *,
        read_frames: bool = False,
        read_clean: bool = False,
        read_next: bool = False,
        cache_limit_mb: float = 512.0,
    ) -> None:
        self.path = str(path)
        self.split = split
        self.index = index
        self.read_frames = read_frames
        self.read_clean = read_clean
        self.read_next = read_next
        self.cache_limit_mb = cache_limit_mb
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._cache: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.index.clip_rows)

    def __getstate__(self) -> dict:
        # Worker processes and DDP ranks reopen the file themselves.
        return {**self.__dict__, "_file": None, "_pid": None, "_cache": {}}

    @property
    def group(self) -> h5py.Group:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
            self._cache = {}
        return self._file[self.split]

    def _source(self, name: str) -> h5py.Dataset | np.ndarray:
        """A dataset, or its in-memory copy when it fits the cache limit."""
        dset = self.group[name]
        if name in self._cache:
            return self._cache[name]
        if dset.nbytes <= self.cache_limit_mb * 2**20:
            self._cache[name] = dset[()]
            return self._cache[name]
        return dset

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        clip_rows = self.index.clip_rows[idx]
        group = self.group
        fmri = self._source("fmri")
        rows = self.index.window_rows[idx]
        if self.read_next:  # one read for the windows and the TRs that follow them
            rows = np.concatenate([rows, self.index.next_rows[idx]], axis=1)
        windows = torch.from_numpy(read_rows(fmri, rows))
        window = self.index.window_rows.shape[1]
        batch = {"fmri": windows[:, :window], "index": torch.from_numpy(clip_rows)}
        if self.read_next:
            batch["fmri_next"] = windows[:, window:]
        if self.read_clean:
            clean = read_rows(self._source("fmri_clean"), self.index.window_rows[idx])
            batch["fmri_clean"] = torch.from_numpy(clean)
        for name in EMBEDDINGS:
            if name in group:
                emb = read_rows(self._source(name), clip_rows)
                batch[name] = torch.from_numpy(emb.astype(np.float32))
        if "label" in group:
            batch["label"] = torch.from_numpy(read_rows(self._source("label"), clip_rows)).long()
        else:
            batch["label"] = torch.full((len(idx),), -1, dtype=torch.long)
        if self.read_frames:
            batch["frames"] = torch.from_numpy(read_rows(group["frames"], clip_rows))
        return batch


def _batch_is_ready(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """collate_fn: ``__getitems__`` already returns the batch."""
    return batch


class EpochShuffleSampler(Sampler[int]):
    """Shuffle with a permutation drawn from ``seed + epoch``.

    The order of epoch ``e`` depends only on ``(seed, e)``, so a run resumed at an epoch
    boundary sees the same data order as an uninterrupted one. Lightning calls
    :meth:`set_epoch` at the start of every epoch.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())


class FMRIVideoDataModule(L.LightningDataModule):
    """Pairs of (fMRI window, clip) from one subject file, for both NeuroCine stages.

    Parameters
    ----------
    cfg : DictConfig
        The experiment config; reads ``data.*``, ``encoder.patch_size`` (default mask patch) and
        ``seed``.
    read_frames : bool, default=False
        Read the clips' pixels (stage 2). Stage 1 reads only fMRI and embeddings.
    read_clean : bool, default=False
        Also read the noise-free ``fmri_clean`` windows (simulated data; the oracle).
    augment : bool, default=True
        Apply spatial masking and temporal interpolation to training batches.

    Attributes
    ----------
    n_voxels : int
    clip_dim : int or None
        Width of the CLIP embeddings, None when the file has none.
    frames_shape : tuple of int or None
        ``(F, H, W)`` of the stored clips.
    """

    def __init__(
        self,
        cfg: DictConfig,
        read_frames: bool = False,
        read_clean: bool = False,
        augment: bool = True,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.path = Path(cfg.data.path)
        self.read_frames = read_frames
        self.read_clean = read_clean
        self.augment = augment
        aug = cfg.data.augment
        self.mask_ratio = float(aug.mask_ratio)
        self.interp_ratio = float(aug.interp_ratio)
        patch = aug.mask_patch_size if aug.mask_patch_size is not None else cfg.encoder.patch_size
        self.mask_patch_size = int(patch)
        self.datasets: dict[str, SubjectWindows] = {}
        self._generator: torch.Generator | None = None
        self._generator_state: torch.Tensor | None = None
        self.n_voxels: int | None = None
        self.clip_dim: int | None = None
        self.frames_shape: tuple[int, ...] | None = None

    def prepare_data(self) -> None:
        """Validate the file once (rank 0) before anything trains."""
        validate(self.path)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        summary = validate(self.path)
        if "train" not in summary.splits:
            raise SchemaError(f"{self.path}: /train: missing split")
        train = summary.splits["train"]
        self.n_voxels = summary.n_voxels
        dims = set(train.embeddings.values())
        if len(dims) > 1:
            raise SchemaError(f"{self.path}: /train: clip_image and clip_text widths differ {dims}")
        self.clip_dim = dims.pop() if dims else None
        self.frames_shape = train.frames
        if self.read_frames and train.frames is None:
            raise SchemaError(f"{self.path}: /train/frames: missing dataset (stage 2 needs pixels)")
        if self.read_clean and "fmri_clean" not in train.optional:
            raise SchemaError(f"{self.path}: /train/fmri_clean: missing (simulated data only)")
        data = self.cfg.data
        with h5py.File(self.path, "r") as f:
            train_run = f["train/run"][()]
            test_run = f["test/run"][()] if "test" in f else None
        runs = ordered_runs(train_run)
        n_val = int(data.val_runs)
        if not 0 <= n_val < len(runs):
            raise ConfigError(
                f"data.val_runs={n_val}: {self.path} has {len(runs)} training runs; "
                "at least one must remain for training"
            )
        split_runs = {"train": runs[: len(runs) - n_val], "val": runs[len(runs) - n_val :]}
        if data.train_runs is not None:
            n_train = int(data.train_runs)
            if not 1 <= n_train <= len(split_runs["train"]):
                raise ConfigError(
                    f"data.train_runs={n_train}: {self.path} has {len(split_runs['train'])} "
                    f"training runs after data.val_runs={n_val} (expected 1 … that)"
                )
            split_runs["train"] = split_runs["train"][:n_train]  # validation stays the same
        for name, chosen in split_runs.items():
            index = build_windows(train_run, data.window, data.lag_trs, chosen)
            if len(chosen) and not len(index.clip_rows):
                longest = max(int(np.sum(train_run == r)) for r in chosen)
                raise ConfigError(
                    f"data.lag_trs={data.lag_trs}: no {name} window, the {name} runs of "
                    f"{self.path} have at most {longest} TRs; lower data.lag_trs"
                )
            self.datasets[name] = self._dataset("train", index, read_next=name == "train")
        if test_run is not None:
            index = build_windows(test_run, data.window, data.lag_trs, ordered_runs(test_run))
            self.datasets["test"] = self._dataset("test", index, read_next=False)

    def _dataset(self, split: str, index: WindowIndex, read_next: bool) -> SubjectWindows:
        return SubjectWindows(
            self.path,
            split,
            index,
            read_frames=self.read_frames,
            read_clean=self.read_clean,
            read_next=read_next and self.augment and self.interp_ratio > 0,
            cache_limit_mb=float(self.cfg.data.cache_limit_mb),
        )

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        if name not in self.datasets:
            raise SchemaError(f"{self.path}: no '{name}' samples (is the split in the file?)")
        dataset = self.datasets[name]
        workers = int(self.cfg.data.num_workers)
        return DataLoader(
            dataset,
            batch_size=int(self.cfg.data.batch_size),
            sampler=EpochShuffleSampler(len(dataset), int(self.cfg.seed)) if shuffle else None,
            collate_fn=_batch_is_ready,
            num_workers=workers,
            persistent_workers=workers > 0,
            drop_last=shuffle and len(dataset) >= int(self.cfg.data.batch_size),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def loader(self, split: str, batch_size: int | None = None) -> DataLoader:
        """An unshuffled loader over ``train``/``val``/``test`` (for baselines and evaluation)."""
        loader = self._loader(split, shuffle=False)
        if batch_size is not None:
            loader = DataLoader(
                loader.dataset, batch_size=batch_size, collate_fn=_batch_is_ready, num_workers=0
            )
        return loader

    def train_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """fMRI windows ``[N, W, V]`` and clips ``[N, F, H, W, 3]`` of the ``train`` samples.

        What the models learnt on, whole, for the decoders fitted in closed form (mean frame,
        pixel ridge); needs ``read_frames``.
        """
        dataset = self.datasets["train"]
        batch = dataset.__getitems__(list(range(len(dataset))))
        return batch["fmri"].numpy(), batch["frames"].numpy()

    # -- augmentation on the batch, where it runs on the training device ------------------------

    def _augment_generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            rank = self.trainer.global_rank if self.trainer is not None else 0
            self._generator = torch.Generator(device=device).manual_seed(
                int(self.cfg.seed) * 1000 + rank
            )
            if self._generator_state is not None:
                self._generator.set_state(self._generator_state)
                self._generator_state = None
        return self._generator

    def augment_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Apply temporal interpolation then spatial masking to ``batch["fmri"]``."""
        fmri = batch["fmri"]
        generator = self._augment_generator(fmri.device)
        if self.interp_ratio > 0:
            fmri = temporal_interpolate(fmri, batch["fmri_next"], self.interp_ratio, generator)
        if self.mask_ratio > 0:
            fmri = spatial_mask(fmri, self.mask_ratio, self.mask_patch_size, generator)
        return {**batch, "fmri": fmri}

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        if self.augment and self.trainer is not None and self.trainer.training:
            batch = self.augment_batch(batch)
        batch.pop("fmri_next", None)
        return batch

    def state_dict(self) -> dict:
        """The augmentation generator's state, saved in Lightning checkpoints."""
        return {"augment_generator": self._generator.get_state() if self._generator else None}

    def load_state_dict(self, state_dict: dict) -> None:
        self._generator_state = state_dict.get("augment_generator")
        self._generator = None
