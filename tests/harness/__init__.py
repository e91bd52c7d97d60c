"""Test harness: a real ComfyUI server in a subprocess, ComfyUI in-process, tiny real-format models.

Everything here is test/developer code; nothing in ``nodes/`` or ``iad/`` imports it.
"""
