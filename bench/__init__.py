"""Benchmarks that print ours beside a baseline, measured in one run on the same servers."""
