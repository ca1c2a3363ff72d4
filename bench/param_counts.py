"""Trainable / total parameter counts per adapter preset, for the tiny model and the SD 1.5 architecture.

SD 1.5 is built on the meta device (no weights, no download, no memory): counts only.
Usage: python bench/param_counts.py [--rank N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sdft.config  # noqa: E402,F401
from sdft.adapters.lora import setup_trainable  # noqa: E402
from sdft.models.params import count_params  # noqa: E402
from sdft.models.sd15_arch import build_sd15_text_encoder, build_sd15_unet  # noqa: E402
from sdft.models.tiny import build_tiny_pipeline  # noqa: E402

PRESETS = ["lora_attn", "lora_attn_ff", "lora_all", "full"]


def adapter_cfg(preset: str, rank: int | None):
    with initialize_config_dir(str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"adapter={preset}"] + ([f"adapter.rank={rank}"] if rank else []))
    return cfg.adapter


def models(name: str):
    if name == "tiny":
        pipe = build_tiny_pipeline()
        return pipe.unet, pipe.text_encoder
    return build_sd15_unet(device="meta"), build_sd15_text_encoder(device="meta")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rank", type=int, default=None, help="override every preset's rank")
    args = parser.parse_args()
    print("| model | preset | rank | U-Net trainable | U-Net total | text enc. trainable | text enc. total |")
    print("|---|---|---|---|---|---|---|")
    for model in ("tiny", "sd15"):
        for preset in PRESETS:
            unet, te = models(model)
            cfg = adapter_cfg(preset, args.rank)
            setup_trainable(unet, te, cfg)
            (ut, ua), (tt, ta) = count_params(unet), count_params(te)
            rank = cfg.rank if cfg.kind == "lora" else "-"
            print(f"| {model} | {preset} | {rank} | {ut:,} | {ua:,} | {tt:,} | {ta:,} |")


if __name__ == "__main__":
    main()
