"""Benchmarks that print figures and write JSON beside a baseline: run each as `python -m bench.NAME`."""
