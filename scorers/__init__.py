"""Scorers: pure functions and small models on batches (no pipeline, no stages).

Their numba kernels are cached where the caller points numba (pipeline/core/cache.py sets it for
every Thresher entry point); scorers set nothing on import.
"""
