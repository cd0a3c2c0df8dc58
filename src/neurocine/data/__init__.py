"""Data: the HDF5 contract, readers of raw datasets, the simulator, augmentations, DataModule."""
