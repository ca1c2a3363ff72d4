"""`sdft data caption`: tiny random-weight BLIP and GIT models built from configs (no download) and a tiny WD14-style
ONNX tagger exported with torch.onnx; captions are written next to the images, with the trigger word first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdft.cli import main as sdft_main
from sdft.prep.caption import caption_folder
from sdft.prep.caption_models import OnnxTagger, Tag, load_captioner, pick_tags
from sdft.errors import ConfigError

WORDS = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "a",
    "photo",
    "of",
    "woman",
    "in",
    "space",
    "suit",
    "smiling",
    "the",
    "an",
    "astronaut",
    "red",
    "green",
]
# category 9 = rating, 0 = general, 4 = character (the WD14 selected_tags.csv convention)
TAGS = [("general", 9), ("red_hair", 0), ("green_background", 0), ("^_^", 0), ("some_character", 4), ("blue_sky", 0)]


def image_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), (255, 0, 0)).save(root / "red.png")
    Image.new("RGB", (30, 40), (0, 255, 0)).save(root / "green.png")
    Image.new("L", (40, 30), 255).save(root / "red.mask.png")  # a prepare mask: not an image to caption
    return root


def tokenizer():
    from transformers import BertTokenizer

    # transformers 5 ignores vocab_file=...; the vocabulary is passed as a dict
    return BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)})


def text_config() -> dict:
    return dict(
        vocab_size=len(WORDS),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        bos_token_id=2,
        eos_token_id=3,
        sep_token_id=3,
        pad_token_id=0,
    )


def vision_config() -> dict:
    return dict(
        hidden_size=32, image_size=32, patch_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37
    )


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory) -> Path:
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil, BlipProcessor

    folder = tmp_path_factory.mktemp("blip")
    torch.manual_seed(0)
    config = BlipConfig(text_config=text_config(), vision_config=vision_config(), projection_dim=32)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    BlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tokenizer()
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_tagger(tmp_path_factory) -> Path:
    """model.onnx (NHWC BGR 0..255 in, one sigmoid per tag out) + selected_tags.csv, like SmilingWolf's taggers."""

    class Tagger(torch.nn.Module):
        def forward(self, x):
            b, g, r = (x.mean(dim=(1, 2)) / 255.0).unbind(-1)  # channel means, BGR order
            one = torch.ones_like(r)
            logits = torch.stack([4 * one, 12 * (r - 0.5), 12 * (g - 0.5), 2.2 * one, 1.4 * one, 12 * (b - 0.5)], -1)
            return torch.sigmoid(logits)

    folder = tmp_path_factory.mktemp("tagger")
    torch.onnx.export(
        Tagger(),
        torch.zeros(1, 32, 32, 3),
        str(folder / "model.onnx"),
        input_names=["input_1:0"],
        output_names=["predictions_sigmoid"],
        dynamic_axes={"input_1:0": {0: "batch"}},
        dynamo=False,
    )
    rows = ["tag_id,name,category,count"] + [f"{i},{n},{c},100" for i, (n, c) in enumerate(TAGS)]
    (folder / "selected_tags.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def test_tagger_writes_tags_with_the_trigger_and_keeps_existing_captions(tiny_tagger, tmp_path):
    folder = image_folder(tmp_path / "imgs")
    (folder / "green.txt").write_text("my own caption\n")
    assert sdft_main(["data", "caption", str(folder), "--model", str(tiny_tagger), "--trigger", "sks"]) == 0
    # red image -> red_hair (BGR order honoured; RGB would have scored blue_sky), ^_^ keeps its underscore,
    # the rating is dropped, the character tag (0.80) is under its 0.85 threshold
    assert (folder / "red.txt").read_text() == "sks, red hair, ^_^\n"
    assert (folder / "green.txt").read_text() == "my own caption\n"
    assert not (folder / "red.mask.txt").exists()
    assert (
        sdft_main(
            [
                "data",
                "caption",
                str(folder),
                "--model",
                str(tiny_tagger / "model.onnx"),
                "--overwrite",
                "--trigger",
                "sks",
                "--character-threshold",
                "0.7",
                "--exclude-tags",
                "^_^",
            ]
        )
        == 0
    )
    assert (folder / "green.txt").read_text() == "sks, some character, green background\n"
    assert (folder / "red.txt").read_text() == "sks, some character, red hair\n"
    result = caption_folder(
        folder,
        OnnxTagger(tiny_tagger / "model.onnx", tiny_tagger / "selected_tags.csv"),
        trigger="red hair",
        overwrite=True,
        threshold=0.95,
    )
    assert sorted(Path(p).name for p in result["written"]) == ["green.png", "red.png"]
    assert (folder / "red.txt").read_text() == "red hair\n"  # trigger already there: not added twice
    assert (folder / "green.txt").read_text() == "red hair, green background\n"


def test_pick_tags_order_thresholds_and_limits():
    tags = [Tag(n, c) for n, c in TAGS]
    probs = np.array([0.99, 0.5, 0.9, 0.4, 0.95, 0.2])
    assert pick_tags(probs, tags) == [
        ("some character", 0.95),
        ("green background", 0.9),
        ("red hair", 0.5),
        ("^_^", 0.4),
    ]
    assert [n for n, _ in pick_tags(probs, tags, threshold=0.6, character_threshold=0.96)] == ["green background"]
    assert [n for n, _ in pick_tags(probs, tags, max_tags=2, exclude={"some_character"})] == [
        "green background",
        "red hair",
    ]


def test_blip_captions_every_image_once_with_the_trigger(tiny_blip, tmp_path):
    folder = image_folder(tmp_path / "imgs")
    captioner = load_captioner(str(tiny_blip), max_new_tokens=6, num_beams=1)
    assert captioner.kind == "blip"
    expected = captioner([Image.open(folder / "green.png").convert("RGB")])[0]
    assert expected and all(w in WORDS for w in expected.split())  # decoded with the model's own vocabulary
    result = caption_folder(folder, captioner, trigger="ohwx", batch_size=2)
    assert sorted(Path(p).name for p in result["written"]) == ["green.png", "red.png"]
    text = (folder / "green.txt").read_text()
    assert text == f"ohwx, {expected}\n" and text.count("\n") == 1
    again = caption_folder(folder, captioner, trigger="ohwx")
    assert again["written"] == [] and len(again["kept"]) == 2


def test_git_captioner_loads_and_writes(tmp_path):
    from transformers import CLIPImageProcessorPil, GitConfig, GitForCausalLM, GitProcessor

    torch.manual_seed(0)
    model_dir = tmp_path / "git"
    config = GitConfig(
        vision_config=vision_config(), **{k: v for k, v in text_config().items() if k not in ("sep_token_id",)}
    )
    GitForCausalLM(config).save_pretrained(model_dir)
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    GitProcessor(image_processor=processor, tokenizer=tokenizer()).save_pretrained(model_dir)
    folder = image_folder(tmp_path / "imgs")
    assert (
        sdft_main(
            [
                "data",
                "caption",
                str(folder),
                "--model",
                str(model_dir),
                "--trigger",
                "sks",
                "--max-new-tokens",
                "5",
                "--num-beams",
                "1",
            ]
        )
        == 0
    )
    for stem in ("red", "green"):
        text = (folder / f"{stem}.txt").read_text()
        assert text.startswith("sks") and text.endswith("\n") and "[CLS]" not in text


def test_florence2_captioner_uses_its_task_prompt(tmp_path):
    from transformers import (
        BartTokenizer,
        CLIPImageProcessorPil,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )

    # byte-level BPE: "Ġ" marks a leading space, so decoded words come out separated
    words = ["<s>", "<pad>", "</s>", "<unk>", "Ġa", "Ġphoto", "Ġof", "Ġwoman", "Ġin", "Ġspace", "Ġsuit", "<image>"]
    vocab = {w: i for i, w in enumerate(words)}
    tok = BartTokenizer(vocab=vocab, merges=[], extra_special_tokens={"image_token": "<image>"})
    # 64 px through the DaViT's total stride 32: 2x2 features + 1 = 5 image tokens
    images = CLIPImageProcessorPil(size={"height": 64, "width": 64}, do_center_crop=False, image_seq_length=5)
    text = dict(
        vocab_size=len(words),
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=37,
        decoder_ffn_dim=37,
        max_position_embeddings=128,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_bos_token_id=0,
    )
    vision = dict(
        depths=[1, 1, 1, 1],
        embed_dim=[8, 16, 32, 32],
        num_heads=[1, 1, 2, 2],
        num_groups=[1, 1, 2, 2],
        window_size=2,
        projection_dim=32,
    )
    torch.manual_seed(0)
    model = Florence2ForConditionalGeneration(
        Florence2Config(text_config=text, vision_config=vision, image_token_id=vocab["<image>"])
    )
    model.generation_config.min_new_tokens = 3  # random weights: make it say something
    model.save_pretrained(tmp_path / "florence")
    Florence2Processor(image_processor=images, tokenizer=tok).save_pretrained(tmp_path / "florence")
    captioner = load_captioner(str(tmp_path / "florence"), max_new_tokens=4, num_beams=1)
    assert captioner.kind == "florence2" and captioner.task == "<MORE_DETAILED_CAPTION>"
    folder = image_folder(tmp_path / "imgs")
    caption_folder(folder, captioner, trigger="sks")
    text_out = (folder / "red.txt").read_text()
    assert text_out.startswith("sks, ") and text_out.count("\n") == 1
    said = text_out[len("sks, ") :].split()
    assert said and all(f"Ġ{w}" in words for w in said)


def test_caption_input_errors(tiny_tagger, tmp_path):
    folder = image_folder(tmp_path / "imgs")
    with pytest.raises(ConfigError, match="no such file or folder"):
        load_captioner(str(tmp_path / "nothing"))
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "tagger.onnx").write_bytes((tiny_tagger / "model.onnx").read_bytes())
    with pytest.raises(ConfigError, match="no tags CSV"):
        load_captioner(str(lone / "tagger.onnx"))
    with pytest.raises(ConfigError, match="selected_tags.csv"):
        load_captioner(str(lone))
    assert sdft_main(["data", "caption", str(folder), "--model", str(tmp_path / "nothing")]) == 2
    assert not list(folder.glob("*.txt"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert sdft_main(["data", "caption", str(empty), "--model", str(tiny_tagger)]) == 2  # before loading a model
