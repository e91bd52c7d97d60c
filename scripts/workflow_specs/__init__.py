"""The shipped workflows, described as data: nodes, widget values and links by name.

``scripts/build_workflows.py`` turns each one into the UI-format JSON in ``workflows/`` inside the
real frontend. One module per kind of workflow:

| module | workflows |
|---|---|
| ``model.py`` | the data model (model files, nodes, groups, workflows, official templates) |
| ``parts.py`` | shared model files, help texts, layout columns and node builders |
| ``wan.py`` | hand-made Wan 2.1 / 2.2 text-to-video workflows |
| ``lynx.py`` | Lynx on native Wan 2.1 14B |
| ``families.py`` | hand-made HunyuanVideo and LTX-Video workflows |
| ``templates.py`` | ComfyUI's official templates (LTX-2, HunyuanVideo 1.5) plus IaD |
| ``wan_variants.py`` | ComfyUI's templates of the Wan variants (Animate, S2V, HuMo, InfiniteTalk, SCAIL-2, VACE, Dancer, causal) plus IaD |
| ``long_video.py`` | long videos: ComfyUI's Wan 2.2 14B T2V and LTX-2 templates, made long, plus IaD and core's context windows |
"""

from __future__ import annotations

from .families import hunyuan_video_single_photo, ltxv_single_photo
from .long_video import long_video_workflows
from .lynx import LYNX_RELEASES, lynx_release, wan21_14b_lynx
from .model import Group, ModelFile, Node, OfficialTemplate, TemplateWorkflow, Workflow, download_list, note, official_template
from .templates import hunyuan_video15_t2v_template, ltx2_t2v_template
from .wan_variants import wan_variant_workflows
from .wan import wan21_1_3b_single_photo, wan21_14b_multi_reference, wan21_ab_comparison, wan22_a14b_multi_reference

__all__ = ["Group", "ModelFile", "Node", "OfficialTemplate", "TemplateWorkflow", "Workflow", "all_workflows",
           "download_list", "note", "official_template"]


def all_workflows() -> list[Workflow]:
    return [wan21_1_3b_single_photo(), wan21_14b_multi_reference(), wan22_a14b_multi_reference(), wan21_14b_lynx(),
            *(lynx_release(key) for key in LYNX_RELEASES), wan21_ab_comparison(), hunyuan_video_single_photo(),
            ltxv_single_photo(), ltx2_t2v_template(), hunyuan_video15_t2v_template(), *wan_variant_workflows(),
            *long_video_workflows()]
