"""Numba kernels, each beside its readable NumPy reference twin (`*_reference`)."""
