"""The shipped toy base (`model=toy`): loads offline and fast, small fp16 files, SD module names, prompts control it."""

from __future__ import annotations

import json
import time

import pytest
import torch
from safetensors import safe_open

from helpers.config import compose_config
from sdft.adapters.targets import UNET_TARGETS, resolve_targets
from sdft.families.load import load_pipeline
from sdft.toy.control import attribute_rates, prompt_control_rate
from sdft.models.toy_weights import TOY_MODEL_DIR

CONTROL_N = 96  # generations for the prompt-control rate (random full captions, seeded)
# measured on the shipped weights (sdft/toy/MODEL_CARD.md, model/training.json), asserted with a margin
CONTROL_MIN = {"cls": 0.95, "colour": 0.75, "second": 0.75, "background": 0.6, "pattern": 0.25}
ALL_MIN = 0.15  # measured 0.29 (per attribute: class 0.99, colours 0.875 / 0.875, background 0.72, pattern 0.42)


@pytest.fixture(scope="module")
def toy_pipe():
    pipe = load_pipeline(compose_config(["model=toy"]).model)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_model_toy_loads_offline_in_under_a_second(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = compose_config(["model=toy"]).model
    load_pipeline(cfg)  # imports and file-system caches warm
    start = time.perf_counter()
    pipe = load_pipeline(cfg)
    seconds = time.perf_counter() - start
    assert seconds < 1.0, f"model=toy took {seconds:.2f} s to load"
    assert pipe.unet.dtype == torch.float32 and pipe.vae.dtype == torch.float32  # one dtype, whatever the files hold


def test_weights_are_small_fp16_safetensors():
    files = sorted(TOY_MODEL_DIR.rglob("*.safetensors"))
    assert {f.parent.name for f in files} == {"unet", "vae", "text_encoder"}
    assert sum(f.stat().st_size for f in files) <= 30 * 1024 * 1024
    for f in files:
        with safe_open(str(f), "pt") as st:
            assert all(st.get_slice(k).get_dtype() == "F16" for k in st.keys()), f
    assert not list(TOY_MODEL_DIR.rglob("*.bin")) and not list(TOY_MODEL_DIR.rglob("*.ckpt"))


def test_lora_presets_find_sd_module_names(toy_pipe):
    for group in ("attn1", "attn2", "ff"):
        names = resolve_targets(toy_pipe.unet, [group], UNET_TARGETS, "test")
        assert names and all(".transformer_blocks.0." in n for n in names), group


def test_prompts_control_every_attribute(toy_pipe):
    rate, rows = prompt_control_rate(toy_pipe, n=CONTROL_N)
    per_attribute = attribute_rates(rows)
    assert all(per_attribute[a] >= m for a, m in CONTROL_MIN.items()), per_attribute
    assert rate >= ALL_MIN, f"all-attribute prompt-control rate {rate:.2f} on {CONTROL_N} ({per_attribute})"


def test_model_card_facts_exist():
    facts = json.loads((TOY_MODEL_DIR / "training.json").read_text())
    assert facts["steps"] > 0 and facts["prompt_control_rate_n96"] >= ALL_MIN
    assert min(facts["detector_accuracy_n1000"].values()) >= 0.95
    card = (TOY_MODEL_DIR.parent / "MODEL_CARD.md").read_text()
    for needed in ("loss_curve.png", "samples.png", "+experiment=pretrain_toy", "sdft toy vae"):  # step 1: the VAE
        assert needed in card, needed
    assert (TOY_MODEL_DIR.parent / "loss_curve.png").is_file() and (TOY_MODEL_DIR.parent / "samples.png").is_file()
    for i, _ in enumerate(facts.get("continued", []), 1):  # pretraining step 6 (pretrain_toy_more) and any later
        assert "+experiment=pretrain_toy_more" in card and f"loss_curve_continued_{i}.png" in card
        assert (TOY_MODEL_DIR.parent / f"loss_curve_continued_{i}.png").is_file()
