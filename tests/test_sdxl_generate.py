"""`sdft generate` (the Generator) with an SDXL base: SDXL LoRA files in both formats load on U-Net and both text
towers and render what diffusers' own SDXL pipeline renders with the file; img2img; what SDXL cannot load is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from sdft.adapters.kohya import LoraFormatError
from sdft.adapters.lora import setup_trainable
from sdft.adapters.sdxl_files import save_sdxl_kohya_lora, save_sdxl_lora
from sdft.config import AdapterConfig, AdapterKind
from sdft.errors import ConfigError
from sdft.generation.generator import Generator
from sdft.generation.params import GenerationParams
from sdft.generation.params import make_scheduler
from sdft.models.sdxl_tiny import build_sdxl_tiny_pipeline
from test_adapter_merge_rules import randomise

PROMPT = "photo of sks dog"


@pytest.fixture(scope="module")
def sdxl_files(tmp_path_factory):
    """A random rank-2 LoRA on the tiny SDXL's U-Net and both towers, in the diffusers and the kohya format."""
    out = tmp_path_factory.mktemp("sdxl_lora")
    pipe = build_sdxl_tiny_pipeline()
    models = (pipe.unet, pipe.text_encoder, pipe.text_encoder_2)
    setup_trainable(pipe.unet, pipe.text_encoder, AdapterConfig(kind=AdapterKind.lora, rank=2), pipe.text_encoder_2)
    for seed, model in enumerate(models):
        randomise(model, seed)
    return (
        save_sdxl_lora(*models, out / "pytorch_lora_weights.safetensors"),
        save_sdxl_kohya_lora(*models, out / "kohya.safetensors", {"ss_network_module": "networks.lora"}),
    )


def reference(path=None) -> np.ndarray:
    """diffusers' own SDXL pipeline on the same base, with the file loaded by `load_lora_weights`."""
    pipe = build_sdxl_tiny_pipeline()
    if path is not None:
        pipe.load_lora_weights(str(path.parent), weight_name=path.name)
    pipe.scheduler = make_scheduler("euler", pipe.scheduler.config)  # as the Generator's params below
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        PROMPT,
        num_inference_steps=2,
        guidance_scale=3.0,
        height=64,
        width=64,
        output_type="np",
        generator=torch.Generator("cpu").manual_seed(0),
    ).images[0]


def test_sdxl_loras_render_as_in_diffusers_and_img2img_works(sdxl_files, tmp_path):
    gen = Generator("sdxl_tiny", cache_dir=str(tmp_path), device="cpu")
    params = dict(prompt=PROMPT, steps=2, guidance=3.0, width=64, height=64, seed=0, scheduler="euler")
    base = gen.render(GenerationParams(**params))[0]
    np.testing.assert_allclose(base, reference(), atol=1e-4)
    for path in sdxl_files:
        lora = gen.load_lora(path)
        assert set(lora.parts) == {"unet", "text_encoder", "text_encoder_2"}
        image = gen.render(GenerationParams(**params, loras=[str(path)]))[0]
        assert np.abs(image - base).max() > 1e-3  # the LoRA changes the image
        np.testing.assert_allclose(image, reference(path), atol=1e-4)
    init = Image.new("RGB", (64, 64), "gray")
    out = gen.generate(GenerationParams(**params, init_image=init, strength=0.5, loras=[str(sdxl_files[0])]))
    assert out[0].image.size == (64, 64) and "Lora hashes" in out[0].infotext


def test_what_an_sdxl_base_cannot_load_is_refused(sdxl_files, tmp_path):
    gen = Generator("sdxl_tiny", cache_dir=str(tmp_path), device="cpu")
    kohya = load_file(str(sdxl_files[1]))
    sd1 = tmp_path / "sd1.safetensors"
    save_file(
        {k.replace("lora_te1_", "lora_te_"): v for k, v in kohya.items() if not k.startswith("lora_te2_")}, str(sd1)
    )
    with pytest.raises(LoraFormatError, match="SD 1.x LoRA"):
        gen.load_lora(sd1)
    emb = tmp_path / "emb.safetensors"
    save_file({"emb_params": torch.zeros(1, 32)}, str(emb))
    with pytest.raises(ConfigError, match="SD 1.x .one tensor. embedding, this base is SDXL"):
        gen.load_embedding(emb)
    assert gen.loaded_loras == []
