"""NeuroCine: decode the videos a person watched from fMRI (arXiv 2402.01590), in Lightning."""

__version__ = "0.1.0"
