"""Issue 32 item 5: every run writes a model card (README.md beside the LoRA files, with the grid), and
`sdft hub push` uploads that folder with the token from HF_TOKEN only (offline: HfApi's calls are mocked)."""

from __future__ import annotations

from unittest import mock

import pytest
from huggingface_hub import ModelCard

from sdft.cli import main
from sdft.cli.hub import push
from sdft.errors import ConfigError
from sdft.run.train import run

TOKEN = "hf_fake_token_for_the_test_0123456789"


@pytest.fixture(scope="module")
def trained(tiny_cache, tmp_path_factory):
    from helpers.config import FAST, compose_config

    out = tmp_path_factory.mktemp("card") / "run"
    cfg = compose_config(
        FAST
        + [
            f"model.cache_dir={tiny_cache}",
            f"output_dir={out}",
            "prior=none",
            "data.trigger=sks",
            "trainer.max_steps=1",
            "card.license=mit",
        ]
    )
    run(cfg)
    return out


def test_a_run_writes_a_model_card_beside_its_lora(trained):
    folder = trained / "main" / "lora"
    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "mit" and card.data.library_name == "diffusers"
    assert card.data.base_model is None  # "tiny" is no Hub repo: not claimed as one
    assert "lora" in card.data.tags and card.data.widget[0]["output"]["url"] == "grid.png"
    assert (folder / "grid.png").read_bytes()[:4] == b"\x89PNG"
    text = card.text
    assert "`sks`" in text and "![grid](grid.png)" in text  # the trigger and the final grid
    assert "| rank | 4 |" in text and "| steps | 1 |" in text  # settings
    assert "| sdft.safetensors | kohya LoRA | AUTOMATIC1111" in text  # files and the tools that load them
    assert "| pytorch_lora_weights.safetensors | diffusers / peft LoRA |" in text


def test_hub_push_uploads_the_lora_folder_with_the_token_from_the_environment(trained, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with mock.patch("huggingface_hub.HfApi") as api_class:
        api = api_class.return_value
        api.create_repo.return_value = "https://huggingface.co/me/my-lora"
        assert main(["hub", "push", str(trained), "--repo", "me/my-lora", "--private"]) == 0
    api_class.assert_called_once_with()  # no token passed on: huggingface_hub reads HF_TOKEN itself
    api.create_repo.assert_called_once_with("me/my-lora", private=True, exist_ok=True, repo_type="model")
    upload = api.upload_folder.call_args.kwargs
    assert upload["repo_id"] == "me/my-lora" and upload["folder_path"] == str(trained / "main" / "lora")
    assert "huggingface.co/me/my-lora" in capsys.readouterr().out
    written = [p for p in trained.rglob("*") if p.is_file()]
    assert not any(TOKEN.encode() in p.read_bytes() for p in written)  # never written anywhere


def test_hub_push_errors_are_one_clear_line(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with mock.patch("huggingface_hub.HfApi") as api_class:
        with pytest.raises(ConfigError, match="set HF_TOKEN"):
            push(trained, "me/my-lora")
        assert main(["hub", "push", str(trained), "--repo", "me/my-lora"]) == 2
        assert "HF_TOKEN" in capsys.readouterr().err
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        with pytest.raises(ConfigError, match="user/name"):
            push(trained, "not a repo")
        with pytest.raises(ConfigError, match="no finished phase"):
            push(tmp_path, "me/my-lora")
    api_class.return_value.upload_folder.assert_not_called()
