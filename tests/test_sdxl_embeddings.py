"""Textual inversion and pivotal tuning on the tiny SDXL: the token goes into both tokenizers and both towers, the
files hold A1111's / ComfyUI's SDXL keys (`clip_l`, `clip_g`; bundled: `bundle_emb.<name>.clip_l/.clip_g`), and a
fresh SDXL base loading them (sdft's Generator, diffusers' `load_textual_inversion` per tower) gets the trained text
states and images."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from helpers.compare import max_diff, render
from sdft.embeddings.files import DIFFUSERS_NAME, load_embedding_file, split_bundle
from sdft.embeddings.tokens import collapse_prompt, expand_prompt
from sdft.errors import ConfigError
from sdft.generation.generator import Generator
from sdft.families import module_pipeline
from sdft.models.sdxl_tiny import build_sdxl_tiny_pipeline
from sdft.run.train import fit
from helpers.wiring import prepare_for_test

SDXL_TI = [
    "+experiment=textual_inversion",
    "model=sdxl_tiny",
    "data.resolution=64",
    "trainer.max_steps=2",
    "optim.embedding_lr=5e-2",
    "adapter.embedding.num_vectors=2",
    "callbacks.checkpoint_every_n_steps=0",
    "callbacks.validation_every_n_steps=0",
    "callbacks.validation_at_start=false",
    "callbacks.validation_seeds=[]",
    "logger=none",
]
PROMPT = "a photo of <sks> dog"


@torch.no_grad()
def text_states(pipe, prompt: str = PROMPT) -> tuple[torch.Tensor, torch.Tensor]:
    """Both towers' conditioning (penultimate states concatenated, pooled) as the SDXL pipeline computes it, with
    diffusers' multi-vector prompt expansion."""
    embeds, _, pooled, _ = pipe.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=False)
    return embeds, pooled


def tables(pipe) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(m.get_input_embeddings().weight for m in (pipe.text_encoder, pipe.text_encoder_2))


def trained_run(fast_config, tmp_path, *extra):
    parts = prepare_for_test(fast_config(*SDXL_TI, f"model.cache_dir={tmp_path / 'cache'}", *extra))
    vectors = parts.module.embeddings
    start = (vectors.trained(), vectors.trained_2())
    summary = fit(parts)
    return parts, summary, start


def test_sdxl_textual_inversion_trains_both_towers_and_its_files_reload_exactly(fast_config, tmp_path):
    parts, summary, (start_l, start_g) = trained_run(fast_config, tmp_path)
    emb = parts.module.embeddings
    clip_l, clip_g = emb.trained(), emb.trained_2()
    base = build_sdxl_tiny_pipeline()
    assert summary["steps"] == 2 and summary["parameters"]["embedding"]["trainable"] == clip_l.numel() + clip_g.numel()
    assert clip_l.shape == (2, tables(base)[0].shape[1]) and clip_g.shape == (2, tables(base)[1].shape[1])
    assert not torch.equal(clip_l, start_l) and not torch.equal(clip_g, start_g), "both towers' vectors train"
    pipe = parts.pipe
    for mine, theirs in zip(tables(pipe), tables(base)):  # the other rows: bitwise unchanged
        assert torch.equal(mine[: theirs.shape[0]], theirs)
    assert pipe.tokenizer.convert_tokens_to_ids(["<sks>", "<sks>_1"]) == emb.ids
    assert pipe.tokenizer_2.convert_tokens_to_ids(["<sks>", "<sks>_1"]) == emb.ids_2

    # validation grids hand SDXL's pipeline the prompt as written: its own expansion then gives the trained tokens
    expanded = expand_prompt(PROMPT, "<sks>", 2)
    sampler = module_pipeline(parts.module, pipe.tokenizer, pipe.tokenizer_2, pipe.scheduler)
    assert (
        sampler.maybe_convert_prompt(collapse_prompt(expanded, pipe.tokenizer.get_added_vocab()), pipe.tokenizer)
        == expanded
    )

    folder = tmp_path / "out" / "main" / "embedding"
    assert summary["output"] == str(folder / DIFFUSERS_NAME)
    want = text_states(module_pipeline(parts.module, pipe.tokenizer, pipe.tokenizer_2, pipe.scheduler))
    for path, word in ((folder / DIFFUSERS_NAME, "<sks>"), (folder / "sks.safetensors", "sks")):
        with safe_open(str(path), framework="pt") as f:
            assert set(f.keys()) == {"clip_l", "clip_g"}
            assert torch.equal(f.get_tensor("clip_l"), clip_l) and torch.equal(f.get_tensor("clip_g"), clip_g)
        token, vectors = load_embedding_file(path)
        assert token == word and set(vectors) == {"clip_l", "clip_g"}
        gen = Generator("sdxl_tiny", cache_dir=str(tmp_path / "cache"), device="cpu")
        assert gen.load_embedding(path) == word
        got = text_states(gen.pipe, PROMPT.replace("<sks>", word))
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        # diffusers' own loader, one tower at a time (the A1111 / ComfyUI SDXL file)
        fresh = build_sdxl_tiny_pipeline()
        state = {k: vectors[k] for k in ("clip_l", "clip_g")}
        fresh.load_textual_inversion(
            state["clip_l"], token=word, text_encoder=fresh.text_encoder, tokenizer=fresh.tokenizer
        )
        fresh.load_textual_inversion(
            state["clip_g"], token=word, text_encoder=fresh.text_encoder_2, tokenizer=fresh.tokenizer_2
        )
        for a, b in zip(text_states(fresh, PROMPT.replace("<sks>", word)), want):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_sdxl_pivotal_tuning_bundles_both_towers_in_the_kohya_file(fast_config, tmp_path):
    parts, summary, _ = trained_run(
        fast_config,
        tmp_path,
        "adapter=lora_attn",
        "adapter.embedding.placeholder='<sks>'",
        "adapter.embedding.train_fraction=0.5",
        "optim.lr=1e-2",
    )
    emb = parts.module.embeddings
    lora_dir = tmp_path / "out" / "main" / "lora"
    kohya = parts.checkpoint.final_kohya_path
    with safe_open(str(kohya), framework="pt") as f:
        state, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0" and meta["sdft_embedding_token"] == "<sks>"
    lora, bundled = split_bundle(state)
    assert {k for k in state if k.startswith("bundle_emb.")} == {"bundle_emb.sks.clip_l", "bundle_emb.sks.clip_g"}
    assert torch.equal(bundled["sks"]["clip_l"], emb.trained()) and torch.equal(
        bundled["sks"]["clip_g"], emb.trained_2()
    )
    assert (lora_dir / DIFFUSERS_NAME).is_file() and (lora_dir / "sks.safetensors").is_file()

    pipe = parts.pipe
    trained = module_pipeline(parts.module.eval(), pipe.tokenizer, pipe.tokenizer_2, pipe.scheduler)
    want = render(trained, "photo of <sks> dog")
    gen = Generator("sdxl_tiny", cache_dir=str(tmp_path / "cache"), device="cpu")
    loaded = gen.load_lora(kohya)
    assert loaded.tokens == ("sks",) and "unet" in loaded.parts
    gen.set_loras([str(kohya)])
    trained_ids = pipe.tokenizer.convert_tokens_to_ids(["<sks>", "<sks>_1"])
    gen_ids = gen.pipe.tokenizer.convert_tokens_to_ids(["sks", "sks_1"])
    assert torch.equal(tables(gen.pipe)[0][gen_ids], tables(pipe)[0][trained_ids])
    assert max_diff(render(gen.pipe, "photo of sks dog"), want) <= 1e-4  # bundled: named by the file-name stem


def test_an_embedding_of_the_other_family_is_refused(tmp_path):
    sd1 = tmp_path / "sd1.safetensors"
    save_file({"emb_params": torch.zeros(1, 32)}, str(sd1))
    gen = Generator("sdxl_tiny", cache_dir=str(tmp_path / "cache"), device="cpu")
    with pytest.raises(ConfigError, match="SD 1.x .one tensor. embedding, this base is SDXL"):
        gen.load_embedding(sd1)
    sdxl = tmp_path / "x.safetensors"
    save_file({"clip_l": torch.zeros(1, 32), "clip_g": torch.zeros(1, 32)}, str(sdxl))
    tiny = Generator("tiny", cache_dir=str(tmp_path / "cache"), device="cpu")
    with pytest.raises(ConfigError, match="SDXL .clip_l . clip_g. embedding, this base is SD 1.x"):
        tiny.load_embedding(sdxl)


def test_sdxl_textual_inversion_resumes_exactly(fast_config, tmp_path):
    """Both towers' vectors are in the resumable state: a run cut after step 2 and resumed ends with the same files."""
    import shutil

    from sdft.run.train import run
    from test_resume import cut_back, same_lora

    every = [*SDXL_TI, f"model.cache_dir={tmp_path / 'cache'}", "trainer.max_steps=4"]
    every += ["callbacks.checkpoint_every_n_steps=1", "callbacks.keep_last_k=10"]
    run(fast_config(*every, f"output_dir={tmp_path / 'straight'}"))
    out = tmp_path / "cut"
    shutil.copytree(tmp_path / "straight", out)
    cut_back(out, 2)
    for p in (out / "main" / "embedding",):  # the final files come from the resumed run
        shutil.rmtree(p, ignore_errors=True)
    assert run(fast_config(*every, f"output_dir={out}", "resume=auto"))["steps"] == 4
    for name in (DIFFUSERS_NAME, "sks.safetensors"):
        assert same_lora(out / "main" / "embedding" / name, tmp_path / "straight" / "main" / "embedding" / name) == 0


def test_collapse_prompt_undoes_expand_prompt():
    for prompt in ("a <sks> dog", "<sks>, and (<sks>) again", "no token", "<sks>_1 alone"):
        expanded = expand_prompt(prompt, "<sks>", 3)
        assert collapse_prompt(expanded, ["<sks>", "<sks>_1", "<sks>_2", "dog"]) == prompt
