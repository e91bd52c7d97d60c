"""IaD - Identity-Action Decoupling, as a torch-only library.

This package never imports ComfyUI or the pack's node code: the nodes, the trainer and the
evaluator all build on it. See ``docs/design.md`` for the method and ``docs/architecture.md``
for how the pieces fit together.
"""

__version__ = "0.1.0"
