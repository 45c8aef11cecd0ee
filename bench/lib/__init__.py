"""Helpers of the benchmarks: not benchmarks themselves, so outside `make bench`'s bench/*.py."""
