"""SDXL training on the tiny SDXL: 2-step runs write both LoRA files, which load through diffusers' SDXL pipeline and
reproduce the trained model; per-sample time ids; both text towers; resume; kohya names on the real SDXL layout."""

from __future__ import annotations

import shutil

import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from safetensors import safe_open

from helpers.images import noise_image
from sdft.config import DataConfig, LossConfig, OptimConfig
from sdft.data.datamodule import DreamBoothDataModule, scan_dataset, training_settings
from sdft.errors import UnsupportedModelError
from sdft.families.sdxl import SdxlConditioning
from sdft.families.sdxl_text import PairTokenizer
from sdft.families import module_pipeline
from sdft.models.loading import make_noise_scheduler
from sdft.models.sdxl_tiny import build_sdxl_tiny_pipeline
from sdft.training.module import DreamBoothModule, StepModels
from sdft.run.train import fit, run
from helpers.wiring import prepare_for_test
from test_resume import cut_back, same_lora

LORA = "pytorch_lora_weights.safetensors"
SDXL = ["model=sdxl_tiny", "trainer.max_steps=2", "optim.lr=1e-3"]


@pytest.fixture
def sdxl_config(fast_config, tmp_path):
    return lambda *extra: fast_config(*SDXL, f"model.cache_dir={tmp_path / 'cache'}", *extra)


@torch.no_grad()
def unet_output(pipe) -> torch.Tensor:
    """The U-Net's prediction for a fixed prompt, latents, timestep and time ids: conditioning on both towers."""
    embeds, _, pooled, _ = pipe.encode_prompt(
        ["photo of sks character"], device="cpu", do_classifier_free_guidance=False
    )
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    time_ids = torch.tensor([[96.0, 80.0, 16.0, 0.0, 64.0, 64.0]])
    return pipe.unet(
        latents, torch.tensor([500]), embeds, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}
    ).sample


def fresh_pipe_with(path) -> StableDiffusionXLPipeline:
    pipe = build_sdxl_tiny_pipeline()
    pipe.load_lora_weights(str(path.parent), weight_name=path.name)
    return pipe


def test_two_step_sdxl_lora_run_writes_both_files_that_load_in_diffusers(sdxl_config, tmp_path):
    """Prior preservation on (class images made by the SDXL pipeline), LoRA on U-Net and both text towers."""
    parts = prepare_for_test(sdxl_config("prior=default", "optim.text_encoder_lr=2e-4", "optim.text_encoder_2_lr=5e-4"))
    summary = fit(parts)
    assert summary["steps"] == 2 and "train/prior_loss" in summary["final_metrics"]
    assert summary["parameters"]["text_encoder_2"]["trainable"] > 0
    assert len(list((tmp_path / "class").rglob("*.png"))) == 2
    groups = {g["name"]: g["lr"] for g in parts.module.configure_optimizers()["optimizer"].param_groups}
    assert groups == {"unet": 1e-3, "text_encoder": 2e-4, "text_encoder_2": 5e-4}
    lora, kohya = parts.checkpoint.final_path, parts.checkpoint.final_kohya_path
    assert lora.name == LORA and kohya.is_file() and parts.grids.written

    with safe_open(str(kohya), framework="pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    for prefix in (
        "lora_unet_input_blocks_4_1_",  # down_blocks.1.attentions.0, in kohya's SDXL (original-layout) names
        "lora_te1_text_model_encoder_layers_",
        "lora_te2_text_model_encoder_layers_",
    ):
        assert any(k.startswith(prefix) for k in keys), prefix
    assert all(k.startswith(("lora_unet_", "lora_te1_text_model_", "lora_te2_text_model_")) for k in keys)
    with safe_open(str(kohya), framework="pt") as f:  # the second tower was trained (its LoRA B moved off zero)
        assert f.get_tensor("lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight").abs().max() > 0

    module = parts.module.eval()
    trained = unet_output(module_pipeline(module, parts.pipe.tokenizer, parts.pipe.tokenizer_2, parts.pipe.scheduler))
    base = unet_output(build_sdxl_tiny_pipeline())
    assert (trained - base).abs().max() > 1e-4  # training changed the outputs
    for path in (lora, kohya):  # the diffusers file and the kohya file reproduce the trained model
        torch.testing.assert_close(unet_output(fresh_pipe_with(path)), trained, atol=1e-5, rtol=1e-4)


def test_full_unet_fine_tune_saves_an_sdxl_pipeline(sdxl_config):
    summary = run(
        sdxl_config(
            "adapter=full", "adapter.train_text_encoder=false", "trainer.max_steps=1", "callbacks.fixed_noise_loss=true"
        )
    )
    assert "val/fixed_noise_loss" in summary["final_metrics"]  # SDXL conditioning without per-sample sizes
    saved = StableDiffusionXLPipeline.from_pretrained(summary["output"], local_files_only=True)
    assert summary["parameters"]["unet"]["trainable"] == summary["parameters"]["unet"]["total"]
    assert (unet_output(saved) - unet_output(build_sdxl_tiny_pipeline())).abs().max() > 0


def test_dual_phase_stack_on_sdxl_adapts_both_towers_per_phase(sdxl_config, tmp_path):
    summary = run(
        sdxl_config(
            "+experiment=dual_phase",
            "model=sdxl_tiny",
            "trainer=cpu",
            "prior=none",
            "trainer.enable_progress_bar=false",
            "callbacks.validation_seeds=[]",
            "phases.0.overrides.trainer.max_steps=1",
            "phases.1.overrides.trainer.max_steps=1",
        )
    )
    assert [p["steps"] for p in summary["phases"]] == [1, 1]
    keys = {}
    for phase in ("face", "body"):
        with safe_open(str(tmp_path / "out" / phase / "lora" / f"dual_phase_{phase}.safetensors"), "pt") as f:
            keys[phase] = {k.partition(".")[0] for k in f.keys()}
    for tower in ("lora_te1_", "lora_te2_"):  # the face phase adapts attention only, the stacked body phase also mlp
        assert not any(k.startswith(tower) and "_mlp_" in k for k in keys["face"])
        assert any(k.startswith(tower) and "_mlp_" in k for k in keys["body"])


def test_sdxl_resume_ends_with_the_same_lora(sdxl_config, tmp_path):
    every = ["trainer.max_steps=4", "callbacks.checkpoint_every_n_steps=1", "callbacks.keep_last_k=10"]
    run(sdxl_config(*every, f"output_dir={tmp_path / 'straight'}"))
    out = tmp_path / "cut"
    shutil.copytree(tmp_path / "straight", out)
    cut_back(out, 2)
    assert run(sdxl_config(*every, f"output_dir={out}", "resume=auto"))["steps"] == 4
    for name in (LORA, "sdft.safetensors"):
        assert same_lora(out / "main" / "lora" / name, tmp_path / "straight" / "main" / "lora" / name) <= 1e-6


@pytest.mark.parametrize(
    "override, words",
    [
        ("model.clip_skip=2", "model.clip_skip=2"),
    ],
)
def test_what_sdxl_lacks_is_refused_before_training(sdxl_config, tmp_path, override, words):
    with pytest.raises(UnsupportedModelError, match=words):
        run(sdxl_config(override))
    assert not list((tmp_path / "out").rglob("*.safetensors"))


def test_time_ids_follow_each_sample_through_buckets_and_the_latent_cache(tmp_path):
    for k, size in enumerate([(96, 64), (64, 96), (80, 80)]):  # (w, h)
        noise_image(tmp_path / "inst" / f"{k}.png", size=size, seed=k)
    pipe = build_sdxl_tiny_pipeline()
    pipe.text_encoder.requires_grad_(False)
    models = StepModels(
        pipe.unet,
        pipe.text_encoder,
        pipe.vae,
        make_noise_scheduler(pipe),
        text_encoder_2=pipe.text_encoder_2,
        conditioning=SdxlConditioning(),
    )
    module = DreamBoothModule(
        models,
        OptimConfig(),
        LossConfig(),
        prior_loss_weight=1.0,
        train_text_encoder=False,
    )
    batches = {}
    for cached in (False, True):
        cfg = DataConfig(
            instance_dir=str(tmp_path / "inst"),
            instance_prompt="photo of sks thing",
            resolution=64,
            batch_size=1,
            enable_bucket=True,
            min_bucket_reso=32,
            max_bucket_reso=128,
            bucket_reso_steps=32,
            cache_latents=cached,
            cache_text_encoder_outputs=cached,
        )
        dm = DreamBoothDataModule(
            training_settings(cfg),
            PairTokenizer(pipe.tokenizer, pipe.tokenizer_2),
            scan_dataset(cfg).examples,
            [],
            seed=0,
            time_ids=True,
        )
        dm.build_caches(module)
        dm.setup("fit")
        batches[cached] = list(dm.train_dataloader())
    # (orig h, orig w, crop top, crop left, target h, target w): both non-square images go to the 64x64 bucket
    expect = {(64, 96, 0, 16, 64, 64), (96, 64, 16, 0, 64, 64), (80, 80, 0, 0, 64, 64)}
    assert {tuple(int(v) for v in b["time_ids"][0]) for b in batches[False]} == expect
    for plain, cached in zip(*batches.values()):
        assert "latent_dist" in cached and "pixel_values" in plain
        assert plain["input_ids"].shape == (1, 2, 77) and "input_ids" not in cached
        assert cached["encoder_hidden_states"].shape[:2] == (1, 77) and cached["text_embeds"].dim() == 2
        torch.testing.assert_close(plain["time_ids"], cached["time_ids"])
        with torch.no_grad():  # the step runs on both
            assert torch.isfinite(module.diffusion_loss(cached)[0]).all()


def test_a_flipped_sample_counts_its_crop_from_the_flipped_side():
    from sdft.families.sdxl_text import sample_time_ids

    # a 120x80 image (w, h) resized to 96x64 and cropped to 64x64 at left 8: flipped, the crop starts at 96-8-64
    assert sample_time_ids((120, 80), (8, 0), (64, 64)).tolist() == [80, 120, 0, 8, 64, 64]
    assert sample_time_ids((120, 80), (8, 0), (64, 64), flipped_width=96).tolist() == [80, 120, 0, 24, 64, 64]


def test_kohya_names_map_onto_the_real_sdxl_architecture():
    """Our kohya keys, read by diffusers' own kohya converter, land on the real SDXL modules (meta device for the
    layout; only the named layers are materialised, with random weights)."""
    from sdft.adapters.lora import setup_trainable
    from sdft.adapters.sdxl_files import kohya_names, sdxl_kohya_tensors
    from sdft.adapters.sdxl_check import sdxl_peft_state
    from sdft.models.sdxl_arch import build_sdxl_text_encoders, build_sdxl_unet
    from test_adapter_merge_rules import _materialise, adapter_cfg, randomise

    names = {
        "unet": [
            "down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_q",
            "down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_k",  # cross-attention 2048 -> 1280
            "mid_block.attentions.0.transformer_blocks.9.ff.net.2",
            "up_blocks.0.attentions.2.proj_out",
            "down_blocks.0.resnets.1.conv1",
            "up_blocks.1.upsamplers.0.conv",
        ],
        # CLIPTextModel: no `text_model.` in transformers 5 (all four projections: diffusers infers the format from them)
        "text_encoder": [f"encoder.layers.11.self_attn.{p}_proj" for p in ("q", "k", "v", "out")],
        "text_encoder_2": ["text_model.encoder.layers.31.mlp.fc2"],  # CLIPTextModelWithProjection keeps it
    }
    te1, te2 = build_sdxl_text_encoders(device="meta")
    models = {"unet": build_sdxl_unet(device="meta"), "text_encoder": te1, "text_encoder_2": te2}
    models = {part: _materialise(model, names[part]) for part, model in models.items()}
    setup_trainable(models["unet"], models["text_encoder"], adapter_cfg("lora"), models["text_encoder_2"])
    for seed, model in enumerate(models.values()):
        randomise(model, seed)
    tensors = sdxl_kohya_tensors(models)
    assert {k.partition(".")[0] for k in tensors} == {
        *kohya_names("unet", names["unet"], models["unet"].config).values(),  # kohya's original-layout names
        *(f"lora_te1_text_model_encoder_layers_11_self_attn_{p}_proj" for p in ("q", "k", "v", "out")),
        "lora_te2_text_model_encoder_layers_31_mlp_fc2",
    }
    converted = sdxl_peft_state(tensors, models["unet"].config)  # diffusers' own conversion, as load_lora_weights
    # diffusers drops `text_model.` for a CLIPTextModel without that level (transformers 5), as here
    converted["text_encoder"] = {k.removeprefix("text_model."): v for k, v in converted["text_encoder"].items()}
    _, alphas = StableDiffusionXLPipeline.lora_state_dict(dict(tensors), unet_config=models["unet"].config)
    for part, model in models.items():
        peft_state = {k: v for k, v in model.state_dict().items() if ".lora_" in k}
        ours = {k.replace(".default", ""): v for k, v in peft_state.items()}
        assert converted[part].keys() == ours.keys(), part
        for key, value in ours.items():
            torch.testing.assert_close(converted[part][key], value)
    assert set(alphas.values()) == {2.0, 3.0}  # adapter_cfg: alpha 2 (linear), conv_alpha 3


def test_sdxl_lora_files_are_checked_against_the_base_and_render_img2img(tmp_path):
    """sdft/families/sdxl.py (for `sdft generate` with SDXL): which modules a file adapts, refusals."""
    import numpy as np
    from PIL import Image
    from safetensors.torch import load_file, save_file

    from sdft.adapters.kohya import LoraFormatError
    from sdft.adapters.lora import setup_trainable
    from sdft.adapters.sdxl_files import save_sdxl_kohya_lora, save_sdxl_lora
    from sdft.config import AdapterConfig, AdapterKind
    from sdft.adapters.sdxl_check import check_sdxl_lora_fits
    from sdft.families import img2img_pipeline
    from test_adapter_merge_rules import randomise

    pipe = build_sdxl_tiny_pipeline()
    models = (pipe.unet, pipe.text_encoder, pipe.text_encoder_2)
    setup_trainable(pipe.unet, pipe.text_encoder, AdapterConfig(kind=AdapterKind.lora, rank=2), pipe.text_encoder_2)
    for seed, model in enumerate(models):
        randomise(model, seed)
    adapted = {
        part: {n for n, m in model.named_modules() if hasattr(m, "lora_A")}
        for part, model in zip(("unet", "text_encoder", "text_encoder_2"), models)
    }
    files = [
        save_sdxl_lora(*models, tmp_path / LORA),
        save_sdxl_kohya_lora(*models, tmp_path / "k.safetensors", {"ss_network_module": "networks.lora"}),
    ]
    fresh = build_sdxl_tiny_pipeline()
    for path in files:
        assert check_sdxl_lora_fits(load_file(str(path)), fresh, str(path)) == adapted
    kohya = load_file(str(files[1]))
    with pytest.raises(LoraFormatError, match="SD 1.x LoRA"):
        check_sdxl_lora_fits({k.replace("lora_te1_", "lora_te_"): v for k, v in kohya.items()}, fresh)
    key = next(k for k in kohya if k.startswith("lora_te2_") and k.endswith("lora_down.weight"))
    save_file({**kohya, key: torch.zeros(2, 7)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(LoraFormatError, match=r"does not fit this SDXL model: 1 problem"):
        check_sdxl_lora_fits(load_file(str(tmp_path / "bad.safetensors")), fresh)
    fresh.load_lora_weights(str(tmp_path), weight_name=LORA)
    image = img2img_pipeline(fresh)(
        "photo of a dog",
        image=Image.new("RGB", (64, 64), "gray"),
        strength=0.5,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images[0]
    assert image.shape == (64, 64, 3) and np.isfinite(image).all()
