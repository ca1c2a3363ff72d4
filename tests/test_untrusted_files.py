"""Files from outside are data, never code; a bad one is one clear line naming it (issue 20, items 6 and 7)."""

from __future__ import annotations

import json
import shutil
import struct

import pytest
import torch

from sdft.errors import SdftError
from sdft.run.train import run


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


def header_file(header: bytes) -> bytes:
    """A safetensors file with this (damaged) JSON header and 16 bytes of data."""
    return struct.pack("<Q", len(header)) + header + bytes(16)


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
    files["bad_header"] = header_file(b'{"lora_unet_x.lora_down.weight": {"dtype": "F32", "shape": [2')
    huge = {"lora_unet_x.lora_down.weight": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 16]}}
    files["huge_shape"] = header_file(json.dumps(huge).encode())
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


BAD = ["empty", "garbage", "truncated", "bad_header", "huge_shape", "bad_json", "nan"]


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
    import sdft.run.wiring
    from sdft.adapters.kohya import LoraFormatError

    monkeypatch.setattr(sdft.run.wiring, "load_pipeline", lambda *a, **k: pytest.fail("the model loaded first"))
    with pytest.raises(LoraFormatError, match=bad_loras[which].name):
        run(fast_config(f"phase.init_lora={bad_loras[which]}", "phase.start=continue"))


@pytest.mark.parametrize("base", ["tiny", "sdxl_tiny"])
@pytest.mark.parametrize("which", BAD)
def test_bad_lora_for_export_is_one_line_before_the_base_loads(which, base, bad_loras, monkeypatch, tmp_path, capsys):
    import sdft.adapters.export
    from sdft.cli import main

    monkeypatch.setattr(sdft.adapters.export, "load_base", lambda *a, **k: pytest.fail("the base loaded first"))
    path = bad_loras[which]
    rc = main(["export", "--base", base, "--lora", str(path), "--diffusers", str(tmp_path / "merged")])
    err = capsys.readouterr().err
    assert rc != 0 and str(path) in err and "Traceback" not in err, err[-2000:]
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize("which", BAD)
def test_bad_lora_for_resize_is_one_line(which, bad_loras, tmp_path, capsys):
    from sdft.cli import main

    path = bad_loras[which]
    rc = main(["lora", "resize", str(path), str(tmp_path / "small.safetensors"), "--rank", "1"])
    err = capsys.readouterr().err
    assert rc != 0 and str(path) in err and "Traceback" not in err, err[-2000:]
    assert not (tmp_path / "small.safetensors").exists()


@pytest.mark.parametrize("which", ["bad_header", "huge_shape"])
def test_every_lora_reader_refuses_a_damaged_file(which, bad_loras, tiny_pipe_factory):
    """The adapter imports and the SDXL fit check read through sdft/adapters/lora_file.py too."""
    from sdft.adapters.imported import file_kind_of
    from sdft.adapters.kohya import LoraFormatError
    from sdft.adapters.peft_files import inject_path

    path = bad_loras[which]
    for read in (lambda: file_kind_of(path), lambda: inject_path(path, tiny_pipe_factory(), "x")):
        with pytest.raises(LoraFormatError, match=path.name):
            read()


@pytest.mark.parametrize("which", ["bad_header", "huge_shape", "truncated", "nan"])
def test_bad_tuned_for_extract_is_one_line_before_the_base_loads(which, bad_loras, monkeypatch, tmp_path, capsys):
    import sdft.adapters.export
    from sdft.cli import main

    monkeypatch.setattr(sdft.adapters.export, "load_base", lambda *a, **k: pytest.fail("the base loaded first"))
    path, out = bad_loras[which], tmp_path / "extracted.safetensors"
    rc = main(["lora", "extract", str(out), "--base", "tiny", "--tuned", str(path), "--rank", "2"])
    err = capsys.readouterr().err
    assert rc != 0 and str(path) in err and "Traceback" not in err, err[-2000:]
    assert not out.exists()


def test_bad_sdft_config_json_is_refused(bad_loras, tmp_path):
    """sdft/training/noise.py parses `sdft_config` to pick the sampling scheduler: a damaged one is refused when read."""
    from safetensors.torch import load_file, save_file

    from sdft.adapters.lora_file import read_lora_file
    from sdft.errors import LoraFormatError

    path = tmp_path / "bad_config.safetensors"
    save_file(load_file(str(bad_loras["bad_json"])), str(path), {"sdft_config": "{not json"})
    with pytest.raises(LoraFormatError, match="sdft_config is not valid JSON"):
        read_lora_file(path)


@pytest.fixture(scope="module")
def bad_embeddings(tmp_path_factory) -> dict:
    """A valid A1111 embedding file, and broken variants of it."""
    from safetensors.torch import save_file

    from sdft.embeddings.files import save_embedding_files

    root = tmp_path_factory.mktemp("bad_embeddings")
    good = save_embedding_files("<sks>", torch.randn(2, 32), root / "good")["a1111"]
    data = good.read_bytes()
    huge = {"emb_params": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 16]}}
    files = {
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "bad_header": header_file(b'{"emb_params": {"dtype": "F32", "shape": [2'),
        "huge_shape": header_file(json.dumps(huge).encode()),
    }
    out = {"good": good}
    for name, content in files.items():
        out[name] = root / f"{name}.safetensors"
        out[name].write_bytes(content)
    out["nan"] = root / "nan.safetensors"
    save_file({"emb_params": torch.full((2, 32), float("nan"))}, str(out["nan"]))
    return out


@pytest.mark.parametrize("which", ["empty", "truncated", "bad_header", "huge_shape", "nan"])
def test_bad_embedding_is_one_line_before_the_model_loads(which, bad_embeddings, monkeypatch, tmp_path, capsys):
    import sdft.cli.generate
    from sdft.embeddings.files import EmbeddingFormatError, load_embedding_file

    path = bad_embeddings[which]
    with pytest.raises(EmbeddingFormatError, match=path.name):  # what every embedding reader calls
        load_embedding_file(path)
    monkeypatch.setattr(sdft.cli.generate, "generator_from_args", lambda *a: pytest.fail("the model loaded first"))
    rc = sdft.cli.generate.main(["--prompt", "x", "--model", "tiny", "--embedding", str(path), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc != 0 and str(path) in err and "Traceback" not in err, err[-2000:]
    assert load_embedding_file(bad_embeddings["good"])[0] == bad_embeddings["good"].stem  # a good one still reads
