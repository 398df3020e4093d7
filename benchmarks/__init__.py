"""Benchmarks of Accord's hot paths, runnable as modules."""
