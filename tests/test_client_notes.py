"""What a run's last lines tell the user about the clients: a pivotal / textual-inversion run says which embedding
file each client takes (ComfyUI does not read the bundle in the LoRA file), a DoRA run warns that A1111 merges its
kohya file inexactly (by how much, and what to do)."""

from __future__ import annotations

import logging

import torch
from safetensors import safe_open

from sdft.embeddings.files import load_embedding_file, split_bundle
from sdft.run.train import run
from test_adapter_merge_rules import a1111_weight_decompose, by_module, comfy_weight_decompose, lora_updown
from test_embeddings import PIVOTAL, TI

QUICK = ["trainer.max_steps=2", "callbacks.checkpoint_every_n_steps=0"]


def test_pivotal_run_writes_the_embedding_beside_the_bundle_and_says_how_each_client_uses_it(
    fast_config, tmp_path, caplog
):
    with caplog.at_level(logging.INFO):
        run(fast_config(*PIVOTAL, *QUICK))
    lora_dir = tmp_path / "out" / "main" / "lora"
    with safe_open(str(lora_dir / "pivotal.safetensors"), "pt") as f:
        _, bundled = split_bundle({k: f.get_tensor(k) for k in f.keys()})
    token, separate = load_embedding_file(lora_dir / "sks.safetensors")  # the file ComfyUI takes
    assert token == "sks" and torch.equal(separate, bundled["sks"])
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Embedding <sks> for ")]
    assert len(lines) == 3, lines
    comfy = next(line for line in lines if "ComfyUI" in line)
    assert str(lora_dir / "sks.safetensors") in comfy and "models/embeddings" in comfy and "embedding:sks" in comfy
    assert "does not read the embedding bundled" in comfy
    a1111 = next(line for line in lines if "A1111" in line)
    assert "pivotal.safetensors" in a1111 and "<lora:pivotal:1>" in a1111


def test_textual_inversion_run_says_how_each_client_uses_the_embedding(fast_config, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        run(fast_config(*TI, *QUICK))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Embedding <sks> for ")]
    folder = tmp_path / "out" / "main" / "embedding"
    assert any("embedding:sks" in line and str(folder / "sks.safetensors") in line for line in lines), lines
    assert not any("bundle" in line for line in lines)


def test_dora_run_warns_that_a1111_merges_its_kohya_file_inexactly(fast_config, tiny_pipe_factory, caplog):
    """The warning is true: on the base it was trained on, A1111's rule merges the file elsewhere than ComfyUI's
    (which equals peft's weight: tests/test_adapter_merge_rules.py)."""
    from sdft.adapters.kohya import kohya_name
    from sdft.adapters.lycoris import A1111_DORA_ERROR

    with caplog.at_level(logging.INFO):
        parts_summary = run(fast_config("adapter=dora", "optim.lr=1e-2", *QUICK))
    kohya = parts_summary["output_kohya"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "A1111" in r.getMessage()]
    assert len(warnings) == 1 and kohya in warnings[0] and A1111_DORA_ERROR in warnings[0]
    assert "sdft lora extract" in warnings[0]
    with safe_open(kohya, "pt") as f:
        layer = by_module({k: f.get_tensor(k) for k in f.keys() if k.startswith("lora_unet_")})
    base = {kohya_name(n, False): m for n, m in tiny_pipe_factory().unet.named_modules()}
    worst = 0.0
    for stem, t in layer.items():
        weight = base[stem].weight.detach().float()
        diff, scale = lora_updown(t, weight.shape)
        comfy = comfy_weight_decompose(t["dora_scale"], weight, diff, scale)
        a1111 = a1111_weight_decompose(t["dora_scale"], weight, diff, scale)
        worst = max(worst, float((a1111 - comfy).abs().max()))
    assert worst > 1e-3
