"""How far A1111 merges sdft's DoRA kohya file from the trained weights, and what an exact A1111 file would cost.

A DoRA trained on the toy base (`+experiment=quickstart`, conf/adapter/dora.yaml, `prior=none`: the quickstart's
base-model prior takes plain LoRAs only). Per adapted layer, with the layer's base weight W:
- peft: the trained weight (peft's own merge of the layer, what sdft and ComfyUI give);
- A1111 v1.10.1 (extensions-builtin/Lora: network_lora.py's up @ down, then network.py `finalize_updown` ->
  `apply_weight_decompose`, which divides W + up @ down by its per-*input-column* norm and multiplies by
  `dora_scale`, before the alpha / rank scale): re-implemented here on the file's tensors;
- ComfyUI (comfy/weight_adapter/base.py `weight_decompose`, output axis, the base weight's row norm).
Printed: per-layer max |W' - W| of the trained change, max |A1111 - peft| and |ComfyUI - peft| (largest and median over
layers) and the relative error ||A1111 - peft||_F / ||peft - W||_F over all layers; 4 identifier-prompt toy images
rendered with A1111's merged weights against the exact ones (max abs pixel diff, 0..1); and the size an exact A1111
file would take (a LyCORIS full `.diff` per adapted layer, fp16) for the dora preset on SD 1.5 and on SDXL, built on
the meta device. One training seed.
Usage: python bench/dora_a1111.py [--steps 200] [--out DIR] [--lora DIR/pytorch_lora_weights.safetensors]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def a1111_merge(weight: torch.Tensor, t: dict) -> torch.Tensor:
    """network_lora.py + network.py finalize_updown / apply_weight_decompose, multiplier 1."""
    down, up = t["lora_down.weight"].float(), t["lora_up.weight"].float()
    updown = (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)
    merged = updown + weight
    shape = [merged.shape[1], *[1] * (weight.dim() - 1)]
    norm = merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1, keepdim=True).reshape(shape).transpose(0, 1)
    scale = float(t["alpha"]) / down.shape[0]
    return weight + (merged * (t["dora_scale"].float() / norm) - weight) * scale


def comfy_merge(weight: torch.Tensor, t: dict) -> torch.Tensor:
    """comfy/weight_adapter lora.py + base.py weight_decompose (dora_scale on the output axis), strength 1."""
    down, up = t["lora_down.weight"].float(), t["lora_up.weight"].float()
    calc = weight + (up.flatten(1) @ down.flatten(1)).reshape(weight.shape) * float(t["alpha"]) / down.shape[0]
    norm = weight.reshape(weight.shape[0], -1).norm(dim=1).reshape(weight.shape[0], *[1] * (weight.dim() - 1))
    return calc * (t["dora_scale"].float() / (norm + torch.finfo(weight.dtype).eps))


def diff_file_mib(unet, text_encoder, cfg) -> float:
    """An exact A1111 file: one full [out, in(, kh, kw)] `.diff` per layer the preset adapts, fp16."""
    from sdft.adapters.targets import TEXT_ENCODER_TARGETS, UNET_TARGETS, resolve_targets

    total = 0
    for model, groups, known in (
        (unet, cfg.unet_targets, UNET_TARGETS),
        (text_encoder, cfg.text_encoder_targets if cfg.train_text_encoder else [], TEXT_ENCODER_TARGETS),
    ):
        for name in resolve_targets(model, groups, known, "bench"):
            total += model.get_submodule(name).weight.numel()
    return total * 2 / 2**20


def main() -> None:
    from adapter_kinds_toy import images

    from sdft.toy.measure import quickstart_lora
    from safetensors.torch import load_file

    from sdft.adapters.kinds import layer_adapters
    from sdft.families.sd1 import kohya_name
    from sdft.config import ModelConfig
    from sdft.generation.generator import Generator
    from peft.tuners.tuners_utils import BaseTunerLayer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    parser.add_argument("--lora", default=None, help="measure this sdft DoRA file (kohya file beside it) instead")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="sdft-dora-"))
    if args.lora:
        sdft_file = Path(args.lora)
    # prior=none: the quickstart's base-model prior takes plain LoRAs only (and A1111's rule does not depend on the prior)
    else:
        sdft_file = quickstart_lora(args.seed, out, ["adapter=dora", f"trainer.max_steps={args.steps}", "prior=none"])
    kohya = load_file(str(next(p for p in sdft_file.parent.glob("*.safetensors") if p != sdft_file)))
    gen = Generator(ModelConfig(path="toy"), device="cpu")
    gen.set_loras([str(sdft_file)])
    exact = images(gen.pipe)
    a1111_pipe = copy.deepcopy(gen.pipe)
    rows, err_sq, delta_sq = [], 0.0, 0.0
    for part in ("unet", "text_encoder"):
        model, a1111_model = getattr(gen.pipe, part), getattr(a1111_pipe, part)
        for name, layer in model.named_modules():
            if not (isinstance(layer, BaseTunerLayer) and layer_adapters(layer)):
                continue
            weight = layer.get_base_layer().weight.detach().float()
            merged = copy.deepcopy(layer)
            merged.merge()
            peft = merged.get_base_layer().weight.detach().float()
            prefix = "lora_te_" if part == "text_encoder" else "lora_unet_"
            stem = kohya_name(name, part == "text_encoder")
            assert stem.startswith(prefix)
            t = {k.partition(".")[2]: v for k, v in kohya.items() if k.partition(".")[0] == stem}
            a1111, comfy = a1111_merge(weight, t), comfy_merge(weight, t)
            rows.append(
                {
                    "layer": f"{part}.{name}",
                    "change": float((peft - weight).abs().max()),
                    "a1111": float((a1111 - peft).abs().max()),
                    "comfyui": float((comfy - peft).abs().max()),
                }
            )
            err_sq += float(((a1111 - peft) ** 2).sum())
            delta_sq += float(((peft - weight) ** 2).sum())
            with torch.no_grad():  # the A1111 pipeline: its merged weight, the adapter off
                target = a1111_model.get_submodule(name)
                target.get_base_layer().weight.copy_(a1111.to(target.get_base_layer().weight.dtype))
    for model in (a1111_pipe.unet, a1111_pipe.text_encoder):
        for layer in model.modules():
            if isinstance(layer, BaseTunerLayer):
                layer.enable_adapters(False)
    pixel = float(abs(images(a1111_pipe) - exact).max())
    worst = max(rows, key=lambda r: r["a1111"])
    summary = {
        "layers": len(rows),
        "change_max": max(r["change"] for r in rows),
        "change_median": statistics.median(r["change"] for r in rows),
        "a1111_error_max": worst["a1111"],
        "a1111_error_median": statistics.median(r["a1111"] for r in rows),
        "a1111_worst_layer": worst["layer"],
        "a1111_worst_layer_change": worst["change"],
        "a1111_relative_frobenius": (err_sq / delta_sq) ** 0.5,
        "comfyui_error_max": max(r["comfyui"] for r in rows),
        "a1111_image_max_pixel_diff": pixel,
    }
    from omegaconf import OmegaConf

    from sdft.models.sd15_arch import build_sd15_text_encoder, build_sd15_unet
    from sdft.models.sdxl_arch import build_sdxl_text_encoders, build_sdxl_unet

    preset = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "adapter" / "dora.yaml")
    summary["exact_a1111_diff_file_mib_sd15"] = round(
        diff_file_mib(build_sd15_unet(device="meta"), build_sd15_text_encoder(device="meta"), preset), 1
    )
    summary["exact_a1111_diff_file_mib_sdxl"] = round(
        diff_file_mib(build_sdxl_unet(device="meta"), build_sdxl_text_encoders(device="meta")[0], preset), 1
    )
    summary["dora_kohya_file_mib_toy"] = round(sum(v.numel() * v.element_size() for v in kohya.values()) / 2**20, 3)
    print(json.dumps(summary, indent=1))
    (out / "dora_a1111.json").write_text(json.dumps({"summary": summary, "layers": rows}, indent=1))


if __name__ == "__main__":
    main()
