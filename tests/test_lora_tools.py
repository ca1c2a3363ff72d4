"""LoRA import (then further training), resize by SVD, and extraction from a fine-tune, on the tiny model."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from helpers.compare import render, max_diff
from sdft.adapters.extract import extract_lora
from sdft.adapters.formats import save_lora
from sdft.adapters.kohya import (
    LoraFormatError,
    kohya_metadata,
    load_kohya_lora,
    save_kohya_lora,
    to_kohya,
    write_kohya_file,
)
from sdft.adapters.load import load_lora_into
from sdft.adapters.lora import has_lora, setup_trainable
from sdft.adapters.resize import resize_file
from sdft.cli import main as cli
from sdft.config import AdapterConfig
from sdft.models.text import text_states

EXACT = 1e-5  # fp32 round trips: measured <= 3e-6 on the tiny model


def seeded_lora(pipe, rank: int, alpha: float, decay: bool = False, seed: int = 0):
    """LoRA on attention, FF and proj layers (U-Net) and attention (text encoder), random weights that matter.
    decay: the rank components get weights 1, 0.4, 0.16, ... so a lower rank keeps most of the update."""
    cfg = AdapterConfig(
        rank=rank, alpha=alpha, unet_targets=["attn1", "attn2", "ff", "proj"], text_encoder_targets=["attn"]
    )
    setup_trainable(pipe.unet, pipe.text_encoder, cfg)
    gen = torch.Generator().manual_seed(seed)
    scale = (0.4 ** torch.arange(rank, dtype=torch.float32)) if decay else torch.ones(rank)
    with torch.no_grad():
        for name, param in [*pipe.unet.named_parameters(), *pipe.text_encoder.named_parameters()]:
            if "lora_B" in name:
                shape = (-1, rank) + (1,) * (param.ndim - 2)
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3 * scale.reshape(shape))
            elif "lora_A" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    return pipe


# ------------------------------------------------------------------------------------------------------- import


def test_import_then_continue_training(tiny_pipe_factory, tmp_path):
    src = seeded_lora(tiny_pipe_factory(), rank=4, alpha=2.0)
    want = render(src)
    files = {
        "kohya": save_kohya_lora(
            src.unet, src.text_encoder, tmp_path / "k.safetensors", kohya_metadata(base_model="tiny")
        ),
        "diffusers": save_lora(src.unet, src.text_encoder, tmp_path / "d.safetensors"),
    }
    for fmt, path in files.items():
        pipe = tiny_pipe_factory()
        info = load_lora_into(pipe.unet, pipe.text_encoder, path)
        assert info.ranks == {"unet": [4], "text_encoder": [4]} and info.alphas["unet"] == [2.0], fmt
        assert max_diff(render(pipe), want) <= EXACT, fmt

    # continue training the imported (kohya) LoRA: only LoRA parameters move
    trainable = [
        n for n, p in [*pipe.unet.named_parameters(), *pipe.text_encoder.named_parameters()] if p.requires_grad
    ]
    assert trainable and all(".lora_" in n for n in trainable)
    frozen = {n: p.detach().clone() for n, p in pipe.unet.named_parameters() if not p.requires_grad}
    before = {n: p.detach().clone() for n, p in pipe.unet.named_parameters() if p.requires_grad}
    params = [p for m in (pipe.unet, pipe.text_encoder) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    ids = pipe.tokenizer(
        ["photo of sks person"], padding="max_length", max_length=pipe.tokenizer.model_max_length, return_tensors="pt"
    ).input_ids
    gen = torch.Generator().manual_seed(0)
    pipe.unet.train()
    for _ in range(3):
        latents = torch.randn(1, 4, 8, 8, generator=gen)
        noise = torch.randn(1, 4, 8, 8, generator=gen)
        t = torch.randint(0, 1000, (1,), generator=gen)
        pred = pipe.unet(pipe.scheduler.add_noise(latents, noise, t), t, text_states(pipe.text_encoder, ids)).sample
        loss = F.mse_loss(pred, noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert torch.isfinite(loss)
    after = dict(pipe.unet.named_parameters())
    assert all(not torch.equal(after[n], v) for n, v in before.items())
    assert all(torch.equal(after[n], v) for n, v in frozen.items())
    pipe.unet.eval()
    trained = render(pipe)
    assert max_diff(trained, want) > 1e-3
    saved = save_kohya_lora(pipe.unet, pipe.text_encoder, tmp_path / "continued.safetensors", {})
    again = tiny_pipe_factory()
    again.load_lora_weights(str(saved))
    assert max_diff(render(again), trained) <= EXACT


def test_import_keeps_per_module_ranks_and_alphas(tiny_pipe_factory, tmp_path):
    src = seeded_lora(tiny_pipe_factory(), rank=4, alpha=4.0)
    sd = load_file(save_kohya_lora(src.unet, src.text_encoder, tmp_path / "k.safetensors", {}))
    changed = {  # module -> (rank, alpha): a non-attention and an attention layer
        "down_blocks.1.attentions.0.proj_in": (2, 1.5),
        "mid_block.attentions.0.transformer_blocks.0.attn2.to_k": (3, 0.5),
    }
    for module, (rank, alpha) in changed.items():
        stem = "lora_unet_" + module.replace(".", "_")
        sd[f"{stem}.lora_down.weight"] = sd[f"{stem}.lora_down.weight"][:rank].contiguous()
        sd[f"{stem}.lora_up.weight"] = sd[f"{stem}.lora_up.weight"][:, :rank].contiguous()
        sd[f"{stem}.alpha"] = torch.tensor(alpha)
    save_file(sd, tmp_path / "mixed.safetensors")
    pipe = tiny_pipe_factory()
    info = load_lora_into(pipe.unet, pipe.text_encoder, tmp_path / "mixed.safetensors")
    assert info.ranks["unet"] == [2, 3, 4] and info.alphas["unet"] == [0.5, 1.5, 4.0]
    layers = {n: m for n, m in pipe.unet.named_modules() if isinstance(m, LoraLayer)}
    for module, (rank, alpha) in changed.items():
        layer, stem = layers[module], "lora_unet_" + module.replace(".", "_")
        down, up = sd[f"{stem}.lora_down.weight"], sd[f"{stem}.lora_up.weight"]
        want = (up.flatten(1) @ down.flatten(1)).reshape(layer.get_base_layer().weight.shape) * alpha / rank
        assert torch.allclose(layer.get_delta_weight("default"), want, atol=1e-6), stem
    # the same file through our kohya writer round-trips (per-module alphas come from the layers)
    out = load_file(save_kohya_lora(pipe.unet, pipe.text_encoder, tmp_path / "again.safetensors", {}))
    assert out.keys() == sd.keys() and all(torch.equal(out[k], sd[k].float()) for k in sd)


def test_import_refuses_a_lora_that_does_not_fit(tiny_pipe_factory, tmp_path):
    stem = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file(
        {
            f"{stem}.lora_down.weight": torch.zeros(4, 320),
            f"{stem}.lora_up.weight": torch.zeros(320, 4),
            f"{stem}.alpha": torch.tensor(4.0),
        },
        tmp_path / "sd15.safetensors",
    )
    pipe = tiny_pipe_factory()
    with pytest.raises(LoraFormatError, match=r"down \(4, 320\) / up \(320, 4\) do not fit"):
        load_lora_into(pipe.unet, pipe.text_encoder, tmp_path / "sd15.safetensors")
    assert not has_lora(pipe.unet)  # checked before anything was injected


# ------------------------------------------------------------------------------------------------------- resize


def test_resize_keeps_most_of_the_norm_and_exact_at_same_rank(tiny_pipe_factory, tmp_path, capsys):
    src = seeded_lora(tiny_pipe_factory(), rank=8, alpha=4.0, decay=True)
    want = render(src)
    path = save_kohya_lora(
        src.unet,
        src.text_encoder,
        tmp_path / "r8.safetensors",
        kohya_metadata(base_model="tiny", training_comment="test"),
    )
    # r -> r: a copy, exact
    same = resize_file(path, tmp_path / "r8b.safetensors", rank=8)
    assert same.overall == 1.0
    a, b = load_file(path), load_file(tmp_path / "r8b.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    assert cli(["lora", "resize", str(path), str(tmp_path / "r4.safetensors"), "--rank", "4"]) == 0
    assert "overall" in capsys.readouterr().out
    report = resize_file(path, tmp_path / "r4.safetensors", rank=4)
    assert report.overall >= 0.99 and report.min_retained >= 0.95, report.summary()
    small = load_file(tmp_path / "r4.safetensors")
    with safe_open(str(tmp_path / "r4.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2.0"  # alpha / rank stays 0.5
    assert "resized from 8 to 4" in meta["ss_training_comment"] and meta["ss_training_comment"].startswith("test")
    for stem in (
        "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_ff_net_2",
        "lora_unet_down_blocks_0_attentions_0_proj_in",
    ):  # best rank-4 approximation of the update
        full = a[f"{stem}.lora_up.weight"].flatten(1).double() @ a[f"{stem}.lora_down.weight"].flatten(1).double()
        u, s, vh = torch.linalg.svd(full, full_matrices=False)
        best = (u[:, :4] * s[:4]) @ vh[:4]
        up, down = small[f"{stem}.lora_up.weight"], small[f"{stem}.lora_down.weight"]
        got = up.flatten(1).double() @ down.flatten(1).double()
        assert small[f"{stem}.alpha"].item() == 2.0 and down.shape[0] == 4
        assert torch.allclose(got, best, atol=1e-6), stem
    resized = tiny_pipe_factory()
    resized.load_lora_weights(str(tmp_path / "r4.safetensors"))
    ours = tiny_pipe_factory()
    load_lora_into(ours.unet, ours.text_encoder, tmp_path / "r4.safetensors")
    got = render(resized)
    assert max_diff(got, render(ours)) <= EXACT
    base = render(tiny_pipe_factory())
    assert max_diff(got, want) < 0.15 * max_diff(base, want), (
        max_diff(got, want),
        max_diff(base, want),
    )  # the rank-8 LoRA's effect


def test_resize_dynamic_rank_loads_everywhere(tiny_pipe_factory, tmp_path):
    src = seeded_lora(tiny_pipe_factory(), rank=8, alpha=8.0, decay=True)
    path = save_kohya_lora(src.unet, src.text_encoder, tmp_path / "r8.safetensors", {})
    report = resize_file(path, tmp_path / "dyn.safetensors", rank=8, fro_target=0.9)
    assert min(m.retained for m in report.modules) >= 0.9 and len({m.new_rank for m in report.modules}) > 1
    sd = load_file(tmp_path / "dyn.safetensors")
    assert len({v.item() for k, v in sd.items() if k.endswith(".alpha")}) == 1  # one alpha (diffusers-safe)
    theirs, ours = tiny_pipe_factory(), tiny_pipe_factory()
    theirs.load_lora_weights(str(tmp_path / "dyn.safetensors"))
    load_lora_into(ours.unet, ours.text_encoder, tmp_path / "dyn.safetensors")
    assert max_diff(render(theirs), render(ours)) <= EXACT


# ------------------------------------------------------------------------------------------------------ extract


def fine_tune(pipe, models, seed: int = 0, rank: int = 2, noise: float = 0.05):
    """A stand-in for a full fine-tune: every Linear/Conv2d weight gets a mostly low-rank update."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for model in models:
            for layer in model.modules():
                if isinstance(layer, (nn.Linear, nn.Conv2d)):
                    w = layer.weight.flatten(1)
                    low = torch.randn(w.shape[0], rank, generator=gen) @ torch.randn(rank, w.shape[1], generator=gen)
                    delta = low / rank**0.5 + noise * torch.randn(w.shape, generator=gen)
                    layer.weight.add_((0.1 * w.std() * delta).reshape(layer.weight.shape))
    return pipe


def test_extract_from_a_fine_tune(tiny_pipe_factory, tmp_path, capsys):
    base = tiny_pipe_factory()
    base_image = render(base)
    tuned = tiny_pipe_factory()
    fine_tune(tuned, [tuned.unet])
    unet_only = render(tuned)
    tuned.save_pretrained(tmp_path / "tuned_unet")
    fine_tune(tuned, [tuned.text_encoder], seed=1)
    want = render(tuned)
    tuned.save_pretrained(tmp_path / "tuned")
    base.save_pretrained(tmp_path / "base")

    # full rank, U-Net and text encoder, through the CLI: reproduces the tuned model through diffusers' loader
    out = tmp_path / "full.safetensors"
    args = ["lora", "extract", str(out), "--base", str(tmp_path / "base"), "--tuned", str(tmp_path / "tuned")]
    assert cli([*args, "--rank", "256"]) == 0
    assert "U-Net + text encoder" in capsys.readouterr().out
    sd = load_file(out)
    assert any(k.startswith("lora_te_text_model_") for k in sd)
    assert "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight" in sd  # 3x3 convs too (LoCon keys)
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    # dims are the tensors' (--rank 256 is capped by each layer's size): the most common rank, convs apart
    ranks = [
        (
            k.endswith(("conv1.lora_down.weight", "conv2.lora_down.weight", "samplers_0_conv.lora_down.weight")),
            v.shape[0],
        )
        for k, v in sd.items()
        if k.endswith("lora_down.weight")
    ]
    common = lambda conv: str(Counter(r for c, r in ranks if c == conv).most_common(1)[0][0])  # noqa: E731
    assert meta["ss_network_dim"] == common(False) and meta["ss_base_model_version"] == "sd_v1"
    assert json.loads(meta["ss_network_args"])["conv_dim"] == common(True) and "sshs_model_hash" in meta
    loaded = tiny_pipe_factory()
    loaded.load_lora_weights(str(out))
    assert max_diff(render(loaded), want) <= 1e-4, max_diff(render(loaded), want)

    # low rank: approximate; text encoder left out when it is unchanged
    tuned_unet = type(base).from_pretrained(tmp_path / "tuned_unet", local_files_only=True)
    unet_sd, te_sd, alphas, report = extract_lora(base, tuned_unet, rank=2)
    assert te_sd == {} and not report.text_encoder
    assert 0.8 < report.overall < 1.0, report.summary()
    assert set(alphas.values()) == {2.0}
    low = tiny_pipe_factory()
    write_kohya_file(to_kohya(unet_sd, None, 2.0, 2.0, alphas=alphas), tmp_path / "low.safetensors", {})
    low.load_lora_weights(str(tmp_path / "low.safetensors"))
    assert max_diff(render(low), unet_only) < 0.3 * max_diff(base_image, unet_only)
    assert load_kohya_lora(tmp_path / "low.safetensors")[1] == {}
