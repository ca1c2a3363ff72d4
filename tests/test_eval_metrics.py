"""Evaluation metrics on feature vectors and the tiny offline CLIP / DINO models: shapes, ranges, sanity relations."""

from __future__ import annotations

from sdft.data.captions import subject_words
from sdft.evaluation.prompts import without_identifier

import math

import numpy as np
import pytest
import torch
from PIL import Image

from sdft.errors import ConfigError, ModelLoadError
from sdft.evaluation import metrics
from sdft.evaluation.features import DEFAULT_MODELS, ClipScorer, DinoScorer, resolve_feature_model
from sdft.evaluation.prompts import LIVE, OBJECT, fill, prompt_templates, spread


@pytest.fixture(scope="module")
def scorers(tmp_path_factory):
    cache = tmp_path_factory.mktemp("features")
    clip = ClipScorer(resolve_feature_model("tiny", "clip", cache_dir=str(cache)))
    dino = DinoScorer(resolve_feature_model("tiny", "dino", cache_dir=str(cache)))
    return clip, dino


def images(n: int, seed: int = 0, size: int = 48) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def test_features_are_normalised_and_shaped(scorers):
    clip, dino = scorers
    ims = images(3)
    for feats in (clip.images(ims), dino.images(ims), clip.texts(["a dog", "a red dog", "a dog in the snow"])):
        assert feats.shape[0] == 3 and feats.ndim == 2 and torch.isfinite(feats).all()
        assert torch.allclose(feats.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_an_image_against_itself_scores_one(scorers):
    clip, dino = scorers
    im = images(1, seed=3)
    for scorer in (clip, dino):
        f = scorer.images(im)
        assert metrics.mean_similarity(f, f) == pytest.approx(1.0, abs=1e-5)  # CLIP-I / DINO
    other = images(1, seed=4)
    assert metrics.mean_similarity(dino.images(im), dino.images(other)) < 1 - 1e-4


def test_clip_t_is_a_cosine_and_follows_rows(scorers):
    clip, _ = scorers
    ims, texts = clip.images(images(2)), clip.texts(["a dog in the jungle", "a cube shaped dog"])
    value = metrics.clip_t(ims, texts)
    assert -1.0 <= value <= 1.0
    expected = float(((ims * texts).sum(-1)).mean())
    assert value == pytest.approx(expected)
    assert metrics.clip_t(texts, texts) == pytest.approx(1.0, abs=1e-5)


def test_self_similarity_excludes_the_diagonal_and_diversity():
    a = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    assert metrics.mean_self_similarity(a) == pytest.approx(0.0)  # orthogonal pair
    assert metrics.diversity([a]) == pytest.approx(1.0)
    same = torch.tensor([[0.6, 0.8]] * 3)
    assert metrics.diversity([same]) == pytest.approx(0.0, abs=1e-6)  # three copies: no diversity
    assert math.isnan(metrics.mean_self_similarity(same[:1]))  # one image: undefined, not 1


def test_drift_metric():
    x = torch.randn(2, 5, 4, 8, 8)
    assert metrics.language_drift(x, x.clone()) == 0.0
    assert metrics.language_drift(x + 0.1, x) == pytest.approx(0.01, rel=1e-4)


def test_auto_picks_tiny_offline_models_only_for_offline_bases(tmp_path):
    assert (
        resolve_feature_model("auto", "clip", "stable-diffusion-v1-5/stable-diffusion-v1-5") == DEFAULT_MODELS["clip"]
    )
    assert resolve_feature_model("auto", "dino", "/models/rv51") == "facebook/dino-vits16"
    assert resolve_feature_model("some/clip", "clip", "tiny") == "some/clip"
    assert resolve_feature_model("auto", "dino", "tiny", str(tmp_path)).startswith(str(tmp_path))


def test_missing_feature_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="eval.dino_model"):
        DinoScorer(str(tmp_path / "nowhere"), local_files_only=True)


def test_prompt_sets_follow_the_paper():
    assert len(LIVE) == len(OBJECT) == 25 and len(set(LIVE)) == 25
    assert sum("wearing" in p or "outfit" in p for p in LIVE) == 10  # accessorisation
    picked = spread(LIVE, 6)
    assert picked[0] == LIVE[0] and picked[-1] == LIVE[-1] and len(set(picked)) == 6
    assert any("wearing" in p or "outfit" in p for p in picked) and any(
        p.startswith("a red") or "cube" in p for p in picked
    )
    assert fill(LIVE[0], "sks", "dog") == "a sks dog in the jungle"
    assert without_identifier("a sks dog in the jungle", "sks") == "a dog in the jungle"


def test_prompt_file_and_errors(tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_text("# mine\n{identifier} {cls} at night\n\n")
    assert prompt_templates(str(f)) == ["{identifier} {cls} at night"]
    with pytest.raises(ConfigError, match="live, object"):
        prompt_templates("nonsense")
    with pytest.raises(ConfigError, match="only \\{identifier\\}"):
        fill("a {who} dog", "sks", "dog")


def test_subject_words():
    assert subject_words("photo of sks dog", "photo of a dog", None) == ("sks", "dog")
    assert subject_words("photo of sks character, smiling", "photo of a character", "ohwx") == ("ohwx", "character")
    assert subject_words(None, None, None, "zwx", "cat") == ("zwx", "cat")
    with pytest.raises(ConfigError, match="eval.identifier"):
        subject_words("photo of a dog", "photo of a dog", None)
