"""Trainable parameters and file sizes per adapter kind (conf/adapter presets) on the SD 1.5 architecture.

The SD 1.5 U-Net and text encoder are built with random weights (no download; ~4 GB of RAM in fp32); each preset's
adapter is injected with peft, both files are written (the sdft/diffusers file and the kohya/LyCORIS file, fp16 as
`callbacks.kohya_fp16=true` writes it, and fp32) and their sizes measured.
Usage: python bench/adapter_sizes.py [--presets lora_attn,locon,...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sdft.config  # noqa: E402,F401
from sdft.adapters.formats import save_lora  # noqa: E402
from sdft.adapters.kinds import has_kohya_format  # noqa: E402
from sdft.adapters.kohya import kohya_metadata, save_kohya_lora  # noqa: E402
from sdft.adapters.lora import adapter_names, delete_adapter, setup_trainable  # noqa: E402
from sdft.models.params import count_params  # noqa: E402
from sdft.models.sd15_arch import build_sd15_text_encoder, build_sd15_unet  # noqa: E402

PRESETS = ["lora_attn", "lora_all", "locon", "dora", "loha", "lokr", "oft"]


def adapter_cfg(preset: str):
    with initialize_config_dir(str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"adapter={preset}"]).adapter


def mib(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(PRESETS))
    args = parser.parse_args()
    unet, te = build_sd15_unet(), build_sd15_text_encoder()
    print(
        "| preset | kind | U-Net trainable | text-encoder trainable | sdft file MiB | kohya fp16 MiB | kohya fp32 MiB |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            cfg = adapter_cfg(preset)
            setup_trainable(unet, te, cfg)
            counts = [count_params(m)[0] if adapter_names(m) else 0 for m in (unet, te)]
            sdft_file = save_lora(unet, te if adapter_names(te) else None, Path(tmp) / f"{preset}.safetensors")
            sizes = ["-", "-"]
            if has_kohya_format(cfg.kind):
                meta = kohya_metadata(base_model="sd15")
                sizes = [
                    mib(save_kohya_lora(unet, te, Path(tmp) / f"{preset}-k{bits}.safetensors", meta, fp16=bits == 16))
                    for bits in (16, 32)
                ]
            print(
                f"| {preset} | {cfg.kind.value if hasattr(cfg.kind, 'value') else cfg.kind} | {counts[0]:,} | "
                f"{counts[1]:,} | {mib(sdft_file)} | {sizes[0]} | {sizes[1]} |",
                flush=True,
            )
            for model in (unet, te):
                for name in adapter_names(model):
                    delete_adapter(model, name)


if __name__ == "__main__":
    main()
