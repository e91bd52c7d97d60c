"""Builds API-format prompts (the JSON that POST /prompt takes) without hand-numbering nodes."""

from __future__ import annotations

import itertools


class Prompt(dict):
    """``p = Prompt(); m = p.add("UNETLoader", unet_name=..., weight_dtype="default")``;
    ``p.add("KSampler", model=m[0], ...)``. ``add`` returns a handle whose ``[i]`` is the link
    ``[node_id, i]`` to output i."""

    def __init__(self):
        super().__init__()
        self._ids = itertools.count(1)

    def add(self, class_type: str, node_id: str | None = None, **inputs) -> "NodeRef":
        node_id = str(node_id or next(self._ids))
        while node_id in self:
            node_id = str(next(self._ids))
        self[node_id] = {"class_type": class_type, "inputs": dict(inputs)}
        return NodeRef(node_id)


class NodeRef(str):
    def __getitem__(self, index: int) -> list:
        return [str(self), index]

    @property
    def id(self) -> str:
        return str(self)


def wan_t2v(unet_name: str, vae_name: str, text: str = "a person smiles", width: int = 64, height: int = 64,
            length: int = 5, steps: int = 3, cfg: float = 3.0, seed: int = 0, sampler: str = "euler",
            scheduler: str = "simple", save: bool = True, filename_prefix: str = "iad_test") -> tuple[Prompt, dict]:
    """A minimal native Wan T2V graph: UNETLoader -> (ModelSamplingSD3) -> KSampler on
    EmptyHunyuanLatentVideo -> VAEDecode -> SaveImage, with the test-only conditioning node
    standing in for umt5-xxl. Returns the prompt and a dict of node handles to splice into."""
    p = Prompt()
    model = p.add("UNETLoader", unet_name=unet_name, weight_dtype="default")
    sampling = p.add("ModelSamplingSD3", model=model[0], shift=8.0)
    positive = p.add("IaDTestWanConditioning", text=text, length=16, scale=1.0)
    negative = p.add("IaDTestWanConditioning", text="", length=16, scale=1.0)
    latent = p.add("EmptyHunyuanLatentVideo", width=width, height=height, length=length, batch_size=1)
    sampler_node = p.add("KSampler", model=sampling[0], positive=positive[0], negative=negative[0],
                         latent_image=latent[0], seed=seed, steps=steps, cfg=cfg, sampler_name=sampler,
                         scheduler=scheduler, denoise=1.0)
    vae = p.add("VAELoader", vae_name=vae_name)
    decode = p.add("VAEDecode", samples=sampler_node[0], vae=vae[0])
    nodes = dict(model=model, sampling=sampling, positive=positive, negative=negative, latent=latent,
                 sampler=sampler_node, vae=vae, decode=decode)
    if save:
        nodes["save"] = p.add("SaveImage", images=decode[0], filename_prefix=filename_prefix)
    return p, nodes


def post_raw(server, prompt: dict, client_id: str = "iad-validation") -> tuple[int, dict]:
    """POST /prompt the way a JSON client that writes NaN/Infinity tokens does (Python's json does);
    returns (HTTP status, parsed answer), also for HTTP 400."""
    import json
    import urllib.error
    import urllib.request

    data = json.dumps({"prompt": prompt, "client_id": client_id}, allow_nan=True).encode()
    request = urllib.request.Request(server.url + "/prompt", data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def saved_latent(server, result, save):
    """The latent a SaveLatent node ``save`` wrote in a finished run ``result``."""
    from safetensors.torch import load_file

    item = result.ui(save)["latents"][0]
    return load_file(str(server.output_dir / item.get("subfolder", "") / item["filename"]))["latent_tensor"]


def run_latent(server, prompt_and_save):
    """Run ``(prompt, save)`` (it must succeed) and return the latent its SaveLatent node wrote."""
    prompt, save = prompt_and_save
    return saved_latent(server, server.run_ok(prompt), save)
