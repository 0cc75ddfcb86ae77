"""Benchmarks: `python -m benchmarks` prints measured figures beside benchmarks/baseline.json."""
