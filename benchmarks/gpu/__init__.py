"""Helpers of ``benchmarks/gpu_check.py`` (``make gpu-check``, issue 34; docs/gpu.md)."""
