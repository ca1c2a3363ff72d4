"""Textual inversion and pivotal tuning on the tiny model: only the new token trains, and every file it writes loads
in diffusers (`load_textual_inversion`) and in sdft's loader as exactly the trained embedding."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors import safe_open

from sdft.embeddings.files import DIFFUSERS_NAME, load_embedding_file, split_bundle
from sdft.embeddings.tokens import expand_prompt, token_names
from sdft.errors import ConfigError
from sdft.generation.generator import Generator
from sdft.cli.generate import main as generate_main
from sdft.models.text import text_states
from sdft.run.train import fit, run
from helpers.wiring import prepare_for_test
from sdft.ui.session import UiSession

TI = [
    "+experiment=textual_inversion",
    "model=tiny",
    "data.resolution=64",
    "trainer.max_steps=3",
    "callbacks.checkpoint_every_n_steps=0",
    "callbacks.validation_every_n_steps=0",
    "callbacks.validation_at_start=false",
    "callbacks.validation_seeds=[]",
    "logger=none",
]
PIVOTAL = [
    "+experiment=pivotal",
    *TI[1:],
    "trainer.max_steps=4",
    "adapter.embedding.train_fraction=0.5",
    "callbacks.checkpoint_every_n_steps=2",
]


def table(pipe) -> torch.Tensor:
    return pipe.text_encoder.get_input_embeddings().weight


def encode(pipe, prompt: str) -> torch.Tensor:
    """The text encoder's states for `prompt`, with diffusers' multi-vector prompt expansion."""
    prompt = pipe.maybe_convert_prompt(prompt, pipe.tokenizer)
    ids = pipe.tokenizer(
        prompt, padding="max_length", max_length=pipe.tokenizer.model_max_length, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        return text_states(pipe.text_encoder, ids)


@pytest.mark.parametrize("num_vectors", [1, 2])
def test_textual_inversion_trains_only_the_new_token_and_its_files_load_exactly(
    num_vectors, fast_config, tiny_pipe_factory, tmp_path, capsys
):
    parts = prepare_for_test(fast_config(*TI, f"adapter.embedding.num_vectors={num_vectors}"))
    base = tiny_pipe_factory()
    n0 = table(base).shape[0]
    start = parts.module.embeddings.trained()
    summary = fit(parts)
    trained = parts.module.embeddings.trained()
    pipe = parts.pipe
    assert summary["steps"] == 3 and trained.shape == (num_vectors, table(base).shape[1])
    assert not torch.equal(trained, start), "the embedding did not move"
    # untrained rows, U-Net and text encoder: bitwise unchanged
    assert torch.equal(table(pipe)[:n0], table(base))
    assert torch.equal(table(pipe)[n0:], trained)  # the table's new rows follow the trained vectors
    for mine, theirs in ((pipe.unet, base.unet), (pipe.text_encoder, base.text_encoder)):
        ref = theirs.state_dict()
        assert all(torch.equal(v, ref[k]) for k, v in mine.state_dict().items() if k in ref and v.shape == ref[k].shape)

    folder = tmp_path / "out" / "main" / "embedding"
    assert summary["output"] == str(folder / DIFFUSERS_NAME)
    expected = encode(pipe, "a <sks> dog")
    for path, token, word in ((folder / DIFFUSERS_NAME, None, "<sks>"), (folder / "sks.safetensors", "sks", "sks")):
        name, vectors = load_embedding_file(path)  # sdft's loader
        assert name == word and torch.equal(vectors, trained)
        fresh = tiny_pipe_factory()
        fresh.load_textual_inversion(str(path), token=token)  # diffusers' loader
        ids = fresh.tokenizer.convert_tokens_to_ids(token_names(word, num_vectors))
        assert torch.equal(table(fresh)[ids], trained)
        assert torch.equal(encode(fresh, f"a {word} dog"), expected)

    # sdft generate --embedding: prints the token to write and renders with it
    assert (
        generate_main(
            [
                "--model",
                "tiny",
                "--embedding",
                str(folder),
                "-p",
                "a <sks> dog",
                "--steps",
                "2",
                "--seed",
                "0",
                "--out",
                str(tmp_path / "gen"),
            ]
        )
        == 0
    )
    assert "write <sks> in the prompt" in capsys.readouterr().err
    assert len(list((tmp_path / "gen").glob("*.png"))) == 1


def test_pivotal_tuning_writes_lora_bundle_and_embedding_and_freezes_the_embedding(
    fast_config, tiny_pipe_factory, tmp_path
):
    summary = run(fast_config(*PIVOTAL))
    lora_dir = tmp_path / "out" / "main" / "lora"
    step2 = tmp_path / "out" / "main" / "checkpoints" / "step_000002"
    _, final = load_embedding_file(lora_dir / DIFFUSERS_NAME)
    _, at_freeze = load_embedding_file(step2 / DIFFUSERS_NAME)
    _, first_a1111 = load_embedding_file(lora_dir / "sks.safetensors")
    assert summary["steps"] == 4 and torch.equal(final, first_a1111)
    assert torch.equal(final, at_freeze), "train_fraction=0.5: the embedding must not change after step 2"
    with safe_open(str(step2 / "pivotal-step000002.safetensors"), "pt") as f:
        lora_at_freeze = {k: f.get_tensor(k) for k in f.keys() if "lora_up" in k}
    with safe_open(str(lora_dir / "pivotal.safetensors"), "pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    assert any(not torch.equal(state[k], v) for k, v in lora_at_freeze.items()), "the LoRA must train on"
    lora, bundled = split_bundle(state)
    assert list(bundled) == ["sks"] and "bundle_emb.sks.string_to_param.*" in state
    assert torch.equal(bundled["sks"], final)

    # diffusers: the LoRA (without the bundle) and the bundled embedding; equal to the separate files loaded
    a, b = tiny_pipe_factory(), tiny_pipe_factory()
    a.load_lora_weights(lora)
    a.load_textual_inversion(bundled["sks"], token="sks")
    b.load_lora_weights(str(lora_dir / "pytorch_lora_weights.safetensors"))
    b.load_textual_inversion(str(lora_dir / DIFFUSERS_NAME))
    assert torch.equal(encode(a, "a sks dog"), encode(b, "a <sks> dog"))
    prompt = dict(num_inference_steps=2, height=64, width=64, output_type="np")
    img_a = a(a.maybe_convert_prompt("a sks dog", a.tokenizer), generator=torch.Generator().manual_seed(0), **prompt)
    img_b = b("a <sks> dog", generator=torch.Generator().manual_seed(0), **prompt)
    assert abs(img_a.images - img_b.images).max() < 1e-5

    # the Generator (sdft generate / ui) takes the bundle from the kohya file and names the token to write
    gen = Generator("tiny")
    loaded = gen.load_lora(lora_dir / "pivotal.safetensors")
    assert loaded.tokens == ("sks",) and "write `sks`" in UiSession(gen, tmp_path / "ui").lora_status()
    ids = gen.pipe.tokenizer.convert_tokens_to_ids(["sks"])
    assert torch.equal(table(gen.pipe)[ids], final)


def test_expand_prompt_names_every_vector_token():
    assert expand_prompt("a <sks> dog, <sks>", "<sks>", 3) == "a <sks> <sks>_1 <sks>_2 dog, <sks> <sks>_1 <sks>_2"
    assert expand_prompt("a <sks> dog", "<sks>", 1) == "a <sks> dog"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["adapter.embedding.placeholder=null"], "set adapter.embedding.placeholder"),
        (["data.cache_text_encoder_outputs=true"], "cannot be used while an embedding trains"),
        (["adapter.embedding.train_fraction=0.5"], "nothing else trains"),
        (["adapter.kind=full"], "not supported"),
        (["data.instance_prompt='a dog'"], "in no instance prompt"),
    ],
)
def test_bad_embedding_configs_fail_before_loading(overrides, message, fast_config):
    with pytest.raises(ConfigError, match=message):
        prepare_for_test(fast_config(*TI, *overrides))


def test_a_token_already_in_the_vocabulary_is_refused(fast_config, tiny_pipe_factory):
    pipe = tiny_pipe_factory()
    word = next(t for t in sorted(pipe.tokenizer.get_vocab()) if t.isascii() and t.isalpha() and len(t) > 2)
    with pytest.raises(ConfigError, match="already a token"):
        prepare_for_test(
            fast_config(*TI, f"adapter.embedding.placeholder={word}", f"data.instance_prompt='a {word} dog'"), pipe
        )


def test_textual_inversion_with_captions_buckets_and_cached_latents(fast_config, tiny_pipe_factory):
    """The example subject's captions hold `sks`: the word itself becomes the trained token (as the compare variant)."""
    parts = prepare_for_test(
        fast_config(
            *TI,
            "data=example_subject",
            "adapter.embedding.placeholder=sks",
            "adapter.embedding.take_over_word=true",
            "data.resolution=64",
            "data.enable_bucket=true",
            "data.min_bucket_reso=32",
            "data.max_bucket_reso=128",
            "data.cache_latents=true",
            "trainer.max_steps=2",
        )
    )
    assert all("sks" in e.prompt for e in parts.datamodule.instances)  # captions, each holding the token
    ids = parts.pipe.tokenizer("photo of sks character").input_ids
    assert parts.module.embeddings.ids[0] in ids  # captions tokenize `sks` as the new token
    start = parts.module.embeddings.trained()
    summary = fit(parts)
    assert summary["steps"] == 2 and parts.datamodule.latents is not None  # latents came from the cache
    assert not torch.equal(parts.module.embeddings.trained(), start)


def test_a_placeholder_that_is_already_a_word_is_refused(fast_config, tiny_pipe_factory, tmp_path):
    """Issue 33 item 7: `dog` is the vocabulary's word `dog</w>`; as a placeholder it would replace the word in every
    prompt and write dog.safetensors. Refused before anything trains or is written, unless taken over on purpose."""
    pipe = tiny_pipe_factory()
    config = [*TI, "adapter.embedding.placeholder=dog", "data.instance_prompt='a dog'", "data.class_prompt='a dog'"]
    with pytest.raises(ConfigError, match=r"placeholder='dog' is already a word .*'dog</w>'.*take_over_word=true"):
        prepare_for_test(fast_config(*config), pipe)
    assert not list((tmp_path / "out").rglob("*.safetensors"))
    parts = prepare_for_test(fast_config(*config, "adapter.embedding.take_over_word=true"), tiny_pipe_factory())
    assert parts.module.embeddings.token == "dog"


def test_an_init_word_outside_the_vocabulary_warns_naming_its_pieces(fast_config, tiny_pipe_factory, caplog):
    """Issue 33 item 7: an init_word the vocabulary does not hold splits into pieces; the start is their mean, said."""
    with caplog.at_level(logging.WARNING, logger="sdft"):
        prepare_for_test(fast_config(*TI, "adapter.embedding.init_word=zzqx"), tiny_pipe_factory())
    said = [r.getMessage() for r in caplog.records if "init_word='zzqx'" in r.getMessage()]
    assert said and "['z', 'z', 'q', 'x</w>']" in said[0], [r.getMessage() for r in caplog.records]


def test_a_run_named_like_its_token_keeps_its_lora_file(tmp_path):
    """Pivotal tuning with name=sks and token <sks>: the kohya LoRA (sks.safetensors) and the A1111 embedding file
    would share a name; the embedding yields (sks_embedding.safetensors), the LoRA keeps its tensors and gets the
    bundle, and the run's last lines name the file actually written (a bug: the embedding overwrote the LoRA)."""
    import safetensors.torch
    import torch

    from sdft.embeddings.files import add_bundle, save_embedding_files, usage_lines

    lora = tmp_path / "sks.safetensors"
    safetensors.torch.save_file({"lora_unet_x.lora_down.weight": torch.ones(2, 3)}, str(lora))
    vectors = torch.randn(1, 32)
    files = save_embedding_files("<sks>", vectors, tmp_path, kohya_file=lora)
    add_bundle(lora, "<sks>", vectors)

    assert files["a1111"] == tmp_path / "sks_embedding.safetensors"
    kept = safetensors.torch.load_file(str(lora))
    assert torch.equal(kept["lora_unet_x.lora_down.weight"], torch.ones(2, 3)) and any("bundle_emb" in k for k in kept)
    assert torch.equal(safetensors.torch.load_file(str(files["a1111"]))["emb_params"], vectors)
    lines = "\n".join(usage_lines("<sks>", tmp_path, lora))
    assert "write sks_embedding in the prompt" in lines and "embedding:sks_embedding" in lines
    other = save_embedding_files("<sks>", vectors, tmp_path / "b", kohya_file=tmp_path / "b" / "run.safetensors")
    assert other["a1111"].name == "sks.safetensors"  # no clash: the usual name
