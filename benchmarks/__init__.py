"""Rerunnable benchmarks of PRDiT (see README.md)."""
