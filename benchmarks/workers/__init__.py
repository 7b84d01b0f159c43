"""Subprocess workers for the comparison benchmarks (one side of a comparison per process)."""
