"""`sdft lora extract --tuned <adapter file>`: any adapter kind (LoHa, LoKr, DoRA, OFT) becomes a plain LoRA/LoCon
by SVD of the merged weights; OFT's kohya `.diff` file is refused with a message."""

from __future__ import annotations

import pytest
from safetensors import safe_open

from helpers.compare import max_diff, render
from sdft.adapters.extract import adapter_file, extract_file
from sdft.adapters.formats import save_lora
from sdft.adapters.kohya import LoraFormatError, kohya_metadata, save_kohya_lora
from sdft.adapters.lora import setup_trainable
from sdft.config import AdapterConfig, AdapterKind
from test_adapter_merge_rules import randomise


def adapter(kind: str, fmt: str, tiny_pipe_factory, tmp_path):
    pipe = tiny_pipe_factory()
    targets = ["attn1", "attn2", "ff"] + (["conv"] if kind in ("loha", "lokr") else [])
    extra = {"oft_block_size": 8} if kind == "oft" else {"conv_rank": 2, "conv_alpha": 3.0}
    setup_trainable(
        pipe.unet,
        pipe.text_encoder,
        AdapterConfig(kind=AdapterKind(kind), rank=4, alpha=2.0, unet_targets=targets, **extra),
    )
    randomise(pipe.unet, 0)
    randomise(pipe.text_encoder, 1)
    if fmt == "sdft":
        path = save_lora(pipe.unet, pipe.text_encoder, tmp_path / "run" / "lora" / "pytorch_lora_weights.safetensors")
    else:
        path = save_kohya_lora(
            pipe.unet, pipe.text_encoder, tmp_path / f"{kind}.safetensors", kohya_metadata(base_model="tiny")
        )
    return render(pipe), path


@pytest.mark.parametrize("kind,fmt", [("loha", "kohya"), ("lokr", "kohya"), ("dora", "kohya"), ("oft", "sdft")])
def test_extract_turns_any_kind_into_a_lora(kind, fmt, tiny_pipe_factory, tmp_path):
    want, path = adapter(kind, fmt, tiny_pipe_factory, tmp_path)
    base = tmp_path / "base"
    tiny_pipe_factory().save_pretrained(base)
    out = tmp_path / "extracted.safetensors"
    tuned = str(tmp_path / "run") if fmt == "sdft" else str(path)  # a run folder is resolved to its LoRA file
    report = extract_file(str(base), tuned, out, rank=256)
    assert report.overall > 0.9999 and report.text_encoder
    with safe_open(str(out), framework="pt") as f:
        keys = list(f.keys())
    assert any(k.endswith(".lora_down.weight") for k in keys)
    assert not any(p in k for k in keys for p in ("hada_", "lokr_", "dora_scale", "oft_", ".diff"))
    loaded = tiny_pipe_factory()
    loaded.load_lora_weights(str(out))  # a plain LoRA/LoCon: diffusers (and A1111, ComfyUI) read it
    assert max_diff(render(loaded), want) <= 1e-4


def test_extract_refuses_the_oft_diff_file(tiny_pipe_factory, tmp_path):
    _, path = adapter("oft", "kohya", tiny_pipe_factory, tmp_path)
    base = tmp_path / "base"
    tiny_pipe_factory().save_pretrained(base)
    assert adapter_file(str(path)) == path and adapter_file(str(base)) is None
    with pytest.raises(LoraFormatError, match="pytorch_lora_weights"):
        extract_file(str(base), str(path), tmp_path / "x.safetensors", rank=4)
