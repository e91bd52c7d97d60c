"""What a Wan block patch knows about the model call it runs in.

Core passes each call's ``transformer_options`` (sigmas, cond/uncond rows, the step gates) down to
the blocks, except where a Wan variant does not: S2V in ComfyUI 0.3.75 calls its blocks without them,
and the causal model's streaming path (``forward_block``) never passes them. A wrapper therefore
records the call's options (and where the video rows are) in a context variable for the duration of
the call, and the patches read it when their own ``transformer_options`` are empty. A context
variable, not a module global: each thread (ComfyUI's multi-GPU work units run one per device) sees
its own call.

- ``ModelCallContext``: a DIFFUSION_MODEL wrapper on every patched Wan model: the video rows of this
  call (``wan_variants.video_rows``) in ``transformer_options[VIDEO_ROWS_KEY]``, and the context.
- ``ApplyModelContext``: an APPLY_MODEL wrapper, for the causal model, whose streaming path returns
  before the DIFFUSION_MODEL wrappers run.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

from .wan_variants import video_rows

VIDEO_ROWS_KEY = "iad_video_rows"      # transformer_options: (start, stop) token rows of the generated video
CALL_CONTEXT_KEY = "iad_call_context"  # the wrappers' key (one per model, whatever the number of IaD Apply nodes)

_CALL_OPTIONS: ContextVar[dict | None] = ContextVar("iad_call_options", default=None)


def call_options(transformer_options: dict) -> dict:
    """The options a block patch acts on: its own, or (where core dropped them) the running call's."""
    if transformer_options:
        return transformer_options
    return _CALL_OPTIONS.get() or transformer_options


@contextmanager
def _current(options: dict):
    token = _CALL_OPTIONS.set(options)
    try:
        yield
    finally:
        _CALL_OPTIONS.reset(token)


class ModelCallContext:
    """DIFFUSION_MODEL wrapper: ``WanModel.forward(x, timestep, context, clip_fea, time_dim_concat,
    transformer_options, **kwargs)`` gets the video rows in a copy of its options."""

    def __deepcopy__(self, memo):
        return self

    def __call__(self, executor, *args, **kwargs):
        args = list(args)
        in_args = len(args) > 5
        options = args[5] if in_args else kwargs.get("transformer_options", {})
        options = {**options, VIDEO_ROWS_KEY: video_rows(executor.class_obj, args[0], kwargs)}
        if in_args:
            args[5] = options
        else:
            kwargs["transformer_options"] = options
        with _current(options):
            return executor(*args, **kwargs)


class ApplyModelContext:
    """APPLY_MODEL wrapper (``BaseModel.apply_model(x, t, c_concat, c_crossattn, control,
    transformer_options, **kwargs)``): the call's options for blocks that receive none."""

    def __deepcopy__(self, memo):
        return self

    def __call__(self, executor, *args, **kwargs):
        options = args[5] if len(args) > 5 else kwargs.get("transformer_options", {})
        with _current(options):
            return executor(*args, **kwargs)


def install(patched, causal: bool) -> None:
    """The call-context wrappers on a patched Wan clone (once, however many IaD Apply nodes chain)."""
    import comfy.patcher_extension as ext

    kinds = [(ext.WrappersMP.DIFFUSION_MODEL, ModelCallContext)]
    if causal:
        kinds.append((ext.WrappersMP.APPLY_MODEL, ApplyModelContext))
    for kind, wrapper in kinds:
        if not patched.get_wrappers(kind, CALL_CONTEXT_KEY):
            patched.add_wrapper_with_key(kind, CALL_CONTEXT_KEY, wrapper())
