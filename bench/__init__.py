"""Benchmarks (``make bench``): each script writes bench/results/<name>.json."""
