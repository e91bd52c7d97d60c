"""What every block patch shares (``wan.py``, ``ltxv.py``, ``hunyuan.py``, ``wan_ref.py``).

Patch objects are immutable after construction: ``__deepcopy__`` (ModelPatcher.clone deep-copies
``model_options``) returns them as they are instead of copying adapter weights and tokens.
"""

from __future__ import annotations

from .attention import add_identity_attention
from .identity import IDENTITY_CALL_OBSERVERS


def comfy_attention(q, k, v, heads):
    """ComfyUI's own attention (its backend choice and attention override); imported at call time,
    as the library imports no ComfyUI module until a patched model runs inside it."""
    import comfy.ldm.modules.attention

    return comfy.ldm.modules.attention.optimized_attention(q, k, v, heads=heads)


class BlockPatch:
    """Base of the patch objects: cheap to deep-copy; the weights are owned by ``AdapterOwner``."""

    def __deepcopy__(self, memo):
        return self

    def to(self, device_or_dtype):
        # K/V are cached per device/dtype on first use; the adapter itself is moved by model
        # management (AdapterOwner), so there is nothing to move here.
        return self

    def models(self):
        # AdapterOwner lists the adapter's patcher once per IaD Apply; the block patches do not.
        return []

    def _add_identity(self, out, q, active, block_index, heads, transformer_options, norm_k=None):
        """``out += weight * attention(q, K_id, V_id)`` for every active (entry, tokens, rows)."""
        for entry, tokens, rows in active:
            k_id, v_id = entry.kv(block_index, q.device, q.dtype, tokens)
            if entry.key_norm and norm_k is not None:
                k_id = norm_k(k_id)
            out = add_identity_attention(out, q, k_id, v_id, heads, entry.weight, rows, comfy_attention)
            if IDENTITY_CALL_OBSERVERS:
                entry.notify(block_index, transformer_options, rows, tokens)
        return out


class SitePatch(BlockPatch):
    """A patch that replaces one module's ``forward`` in one block (``patch_sites``): the module, the
    ``forward`` it replaces (called when it has nothing to add), the block's index, and the entries
    (one per IaD Apply, or Lynx Ref Adapter, in the chain) it serves."""

    def __init__(self, module, inner, block_index: int, entries: tuple):
        self.module, self.inner, self.block_index, self.entries = module, inner, block_index, tuple(entries)


def patch_sites(patched, blocks, entry, patch_cls, site) -> None:
    """Object patches on the ``forward`` of the module ``site(block)`` (a path inside the diffusion
    model) of each of ``blocks``, composing with an earlier patch of the same kind on the same module.
    The patches follow the model onto each device of core's multi-GPU clones (``engines.py``)."""
    from .engines import follow_device_clones

    diffusion_model = patched.model.diffusion_model
    for block in blocks:
        path = site(block)
        key = f"diffusion_model.{path}.forward"
        current = patched.get_model_object(key)
        if isinstance(current, patch_cls):  # an earlier IaD Apply in the chain: compose
            patch = patch_cls(current.module, current.inner, block, current.entries + (entry,))
        else:
            patch = patch_cls(_get(diffusion_model, path), current, block, (entry,))
        patched.add_object_patch(key, patch)
    follow_device_clones(patched)


def _get(root, path: str):
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj
