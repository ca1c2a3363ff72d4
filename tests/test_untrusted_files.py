"""Files from outside are data, never code; a bad one is one clear line naming it (issue 20, items 6 and 7)."""

from __future__ import annotations

import shutil

import pytest
import torch

from sdft.errors import SdftError
from sdft.train import run


class RunsCode:
    """Unpickling this creates `marker`: what a tampered checkpoint could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def tamper(path, marker) -> None:
    torch.save({"state_dict": {}, "evil": RunsCode(marker)}, path)


@pytest.mark.parametrize("which", ["final_state", "state"])
def test_resume_never_unpickles_code(which, fast_config, tmp_path):
    out = tmp_path / "out"
    run(fast_config("trainer.max_steps=2", "callbacks.checkpoint_every_n_steps=1", "callbacks.fixed_noise_loss=false"))
    (out / "summary.json").unlink()  # an unfinished run ...
    if which == "state":  # ... whose phase is started: its newest step checkpoint is continued
        (out / "main" / "summary.json").unlink()
        shutil.rmtree(out / "main" / "lora")
        target = out / "main" / "checkpoints" / "step_000001" / "state.ckpt"
    else:  # ... whose phase finished: final_state.ckpt is restored
        target = out / "main" / "final_state.ckpt"
    marker = tmp_path / "code_ran"
    tamper(target, marker)
    with pytest.raises(SdftError, match=str(target.name)):
        run(
            fast_config(
                "trainer.max_steps=2",
                "callbacks.checkpoint_every_n_steps=1",
                "callbacks.fixed_noise_loss=false",
                f"resume={out}",
            )
        )
    assert not marker.exists(), "loading the checkpoint ran code"


@pytest.fixture(scope="module")
def bad_loras(tiny_pipe_factory, tmp_path_factory) -> dict:
    """A valid LoRA file, and broken variants of it."""
    from safetensors.torch import load_file, save_file

    from sdft.adapters.formats import save_lora
    from sdft.adapters.lora import setup_trainable
    from sdft.config import AdapterConfig

    root = tmp_path_factory.mktemp("bad_loras")
    pipe = tiny_pipe_factory()
    setup_trainable(pipe.unet, pipe.text_encoder, AdapterConfig(rank=2))
    good = save_lora(pipe.unet, pipe.text_encoder, root / "good.safetensors")
    data = good.read_bytes()
    from safetensors import safe_open

    with safe_open(str(good), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(good))
    files = {"empty": b"", "garbage": b"this is not a safetensors file" * 10, "truncated": data[: len(data) // 2]}
    out = {}
    for name, content in files.items():
        (root / f"{name}.safetensors").write_bytes(content)
        out[name] = root / f"{name}.safetensors"
    save_file(tensors, str(root / "bad_json.safetensors"), {**metadata, "lora_adapter_metadata": "{not json"})
    nan = dict(tensors)
    first = sorted(k for k in nan if "lora_B" in k)[0]
    nan[first] = torch.full_like(nan[first], float("nan"))
    save_file(nan, str(root / "nan.safetensors"), metadata)
    out.update(bad_json=root / "bad_json.safetensors", nan=root / "nan.safetensors")
    return out


BAD = ["empty", "garbage", "truncated", "bad_json", "nan"]


@pytest.mark.parametrize("which", BAD)
def test_bad_lora_for_generate_is_one_line(which, bad_loras, tiny_cache, tmp_path, capsys):
    from sdft.cli.generate import main

    path = bad_loras[which]
    rc = main(
        [
            "--prompt",
            "photo of sks dog",
            "--model",
            "tiny",
            "--lora",
            str(path),
            "--steps",
            "2",
            "--width",
            "64",
            "--height",
            "64",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "gen"),
        ]
    )
    err = capsys.readouterr().err
    assert rc != 0 and str(path) in err and "Traceback" not in err, err[-2000:]
    assert not list((tmp_path / "gen").glob("*.png")), "an image was written from a bad LoRA"


@pytest.mark.parametrize("which", BAD)
def test_bad_init_lora_is_refused_before_the_model_loads(which, bad_loras, fast_config, monkeypatch):
    import sdft.train
    from sdft.adapters.kohya import LoraFormatError

    monkeypatch.setattr(sdft.train, "load_pipeline", lambda *a, **k: pytest.fail("the model loaded first"))
    with pytest.raises(LoraFormatError, match=bad_loras[which].name):
        run(fast_config(f"phase.init_lora={bad_loras[which]}", "phase.start=continue"))
