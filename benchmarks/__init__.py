"""Benchmarks of wrfbatch against the real testbed; run them with ``python -m benchmarks.run``."""
