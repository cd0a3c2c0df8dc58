"""Baselines every fMRI decoding paper reports beside its model."""
