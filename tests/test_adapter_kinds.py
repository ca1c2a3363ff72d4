"""Every adapter kind trains on the tiny model, writes its files with ss_* metadata that match the tensors, works in
the phase modes, and resumes exactly (LoHa)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open

from sdft.adapters.kinds import is_adapter_param
from sdft.adapters.lycoris import tensor_metadata
from sdft.run.train import as_config, checked_phases, fit, run
from sdft.run.wiring import prepare
from test_resume import cut_back

LORA = "pytorch_lora_weights.safetensors"
FAST = ["trainer.max_steps=2", "prior=none", "optim.lr=1e-2", "adapter.rank=4", "adapter.alpha=2"]


def read(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@pytest.mark.parametrize("kind", ["locon", "loha", "lokr", "dora", "oft"])
def test_each_kind_trains_and_writes_its_files(kind, fast_config, tmp_path):
    extra = ["adapter.oft_block_size=8"] if kind == "oft" else ["adapter.conv_rank=2", "adapter.conv_alpha=1"]
    summary = run(fast_config(f"adapter={kind}", *FAST, *extra))
    folder = tmp_path / "out" / "main" / "lora"
    peft_file, _ = read(folder / LORA)
    assert peft_file and all(k.startswith(("unet.", "text_encoder.")) for k in peft_file)
    kohya = summary["output_kohya"]
    tensors, meta = read(kohya)
    if kind == "oft":  # weight differences, LyCORIS' "full" keys (tests/test_oft_file.py checks the merge)
        assert tensors and all(k.endswith(".diff") for k in tensors) and "ss_network_dim" not in meta
        assert (meta["ss_network_module"], json.loads(meta["ss_network_args"])) == ("lycoris.kohya", {"algo": "full"})
        return
    assert {k: meta[k] for k in tensor_metadata(tensors)} == tensor_metadata(tensors)
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2.0"
    args = json.loads(meta["ss_network_args"])
    assert meta["ss_network_module"] == "lycoris.kohya" and args["algo"] == {"dora": "locon"}.get(kind, kind)
    if kind != "dora":
        assert (args["conv_dim"], args["conv_alpha"]) == ("2", "1.0")
    part = {"locon": "lora_down.weight", "loha": "hada_w1_a", "lokr": "lokr_w1", "dora": "dora_scale"}[kind]
    assert any(k.endswith("." + part) for k in tensors)


def test_metadata_follows_the_tensors_not_the_config(fast_config, tmp_path):
    """A rank-8 file imported with adapter.rank=4 is still rank 8 in ss_network_dim (issue item 5)."""
    first = run(fast_config("adapter=lora_attn", *FAST, "adapter.rank=8", "adapter.alpha=4", "name=first"))
    second = run(
        fast_config(
            "adapter=lora_attn",
            *FAST,
            f"phase.init_lora={first['output_kohya']}",
            "phase.start=continue",
            "output_dir=" + str(tmp_path / "two"),
        )
    )
    tensors, meta = read(second["output_kohya"])
    assert {t.shape[0] for k, t in tensors.items() if k.endswith("lora_down.weight")} == {8}
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == ("8", "4.0")


def test_per_layer_ranks_use_the_most_common():
    down = lambda r: torch.zeros(r, 16)  # noqa: E731
    tensors = {
        "lora_unet_a.lora_down.weight": down(8),
        "lora_unet_a.alpha": torch.tensor(8.0),
        "lora_unet_b.lora_down.weight": down(4),
        "lora_unet_b.alpha": torch.tensor(2.0),
        "lora_unet_c.lora_down.weight": down(4),
        "lora_unet_c.alpha": torch.tensor(2.0),
    }
    assert tensor_metadata(tensors) == {
        "ss_network_dim": "4",
        "ss_network_alpha": "2.0",
        "ss_network_module": "networks.lora",
    }


TWO_PHASES = [
    "+experiment=dual_phase",
    "model=tiny",
    "trainer=cpu",
    "trainer.enable_progress_bar=false",
    "phases.0.overrides.trainer.max_steps=2",
    "phases.1.overrides.trainer.max_steps=2",
    "prior=none",
    "callbacks.validation_seeds=[]",
    "logger=none",
    "adapter=loha",
]


@pytest.mark.parametrize("mode", ["stack", "merge", "continue"])
def test_loha_phase_modes(mode, fast_config):
    cfg = as_config(fast_config(*TWO_PHASES, f"phases.1.start={mode}"))
    pipe, previous = None, None
    for phase_cfg, data in zip(*checked_phases(cfg)):
        parts = prepare(phase_cfg, data, pipe, previous)
        before = {n: p.detach().clone() for n, p in parts.pipe.unet.named_parameters()}
        fit(parts)
        pipe, previous = parts.pipe, phase_cfg.phase.name
    names = set(pipe.unet.peft_config)
    trained = {n for n, p in pipe.unet.named_parameters() if p.requires_grad}
    assert trained and all(is_adapter_param(n) and ".default" in n for n in trained)
    changed = {n for n, p in pipe.unet.named_parameters() if n in before and not torch.equal(before[n], p)}
    assert changed <= trained  # phase two moved only its own adapter
    assert names == {"stack": {"default", phases_first(cfg)}, "merge": {"default"}, "continue": {"default"}}[mode]


def phases_first(cfg) -> str:
    return cfg.phases[0].name


def test_loha_resume_is_exact(fast_config, tmp_path):
    every = ["trainer.max_steps=4", "callbacks.checkpoint_every_n_steps=1", "callbacks.keep_last_k=10"]
    straight = tmp_path / "straight"
    run(fast_config("adapter=loha", *FAST[1:], *every, f"output_dir={straight}"))
    cut = tmp_path / "cut"
    shutil.copytree(straight, cut)
    cut_back(cut, 2)
    assert run(fast_config("adapter=loha", *FAST[1:], *every, f"output_dir={cut}", "resume=auto"))["steps"] == 4
    a, _ = read(straight / "main" / "lora" / LORA)
    b, _ = read(cut / "main" / "lora" / LORA)
    assert a.keys() == b.keys() and any("hada_w1_a" in k for k in a)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6


def test_resize_refuses_lycoris_files(tmp_path):
    from safetensors.torch import save_file

    from sdft.adapters.resize import resize_file
    from sdft.errors import ConfigError

    path = tmp_path / "loha.safetensors"
    save_file({f"lora_unet_a.hada_{w}": torch.zeros(4, 4) for w in ("w1_a", "w1_b", "w2_a", "w2_b")}, str(path))
    with pytest.raises(ConfigError, match="is a loha file; resize handles LoRA and LoCon files only"):
        resize_file(path, tmp_path / "out.safetensors", rank=2)


def test_stacking_another_kind_is_refused(tiny_pipe_factory):
    from sdft.adapters.lora import setup_trainable, start_phase
    from sdft.config import AdapterConfig, AdapterKind
    from sdft.errors import ConfigError

    pipe = tiny_pipe_factory()
    setup_trainable(pipe.unet, pipe.text_encoder, AdapterConfig(kind=AdapterKind.loha))
    with pytest.raises(ConfigError, match="previous adapter is LOHA.*cannot stack"):
        start_phase(pipe.unet, pipe.text_encoder, AdapterConfig(kind=AdapterKind.lora), "stack", "first")
    # fresh drops the LoHa and its peft wrappers, so a LoRA can go on the same layers
    start_phase(pipe.unet, pipe.text_encoder, AdapterConfig(kind=AdapterKind.lora), "fresh", "first")
    assert {type(m).__module__.split(".")[2] for m in pipe.unet.modules() if hasattr(m, "base_layer")} == {"lora"}
