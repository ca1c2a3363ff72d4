"""The toy VAE's decoder refinement (issue 34, sdft/toy/refine_decoder.py): the encoder and so every latent stay as they
were, and the shipped decoder draws the subject's three spots as three spots, not one band."""

import numpy as np
import torch
from diffusers import AutoencoderKL
from helpers.config import ROOT

from sdft.models.toy_arch import toy_vae
from sdft.models.toy_weights import TOY_MODEL_DIR
from sdft.toy.refine_decoder import detail_weights, finetune_decoder, reconstruction_spots, subject_images


def test_detail_weights_are_one_on_flat_areas_and_higher_on_a_spot():
    x = torch.zeros(1, 3, 8, 8)
    x[0, :, 4, 4] = 1.0  # one bright pixel on a flat image
    w = detail_weights(x, 4.0)
    assert w.shape == (1, 1, 8, 8)
    assert w[0, 0, 0, 0] == 1.0  # far from the pixel: flat
    assert w[0, 0, 4, 4] > w[0, 0, 4, 5] > 1.0  # the pixel itself weighs most, its neighbours more than flat areas


def test_finetune_trains_the_decoder_only():
    torch.manual_seed(0)
    vae = toy_vae()
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    history = finetune_decoder(vae, steps=2, batch_size=2, lr=1e-3)
    after = vae.state_dict()
    assert len(history) == 2 and all(np.isfinite(history))
    encoder = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    decoder = [k for k in before if k.startswith(("decoder.", "post_quant_conv.")) and before[k].is_floating_point()]
    assert encoder and decoder
    assert all(torch.equal(before[k], after[k]) for k in encoder)  # the latents the U-Net knows are unchanged
    assert sum(not torch.equal(before[k], after[k]) for k in decoder) > len(decoder) // 2


def test_shipped_decoder_keeps_the_subjects_spots():
    vae = AutoencoderKL.from_pretrained(TOY_MODEL_DIR / "vae", torch_dtype=torch.float32).eval()
    subject = reconstruction_spots(vae, subject_images(ROOT / "datasets" / "toy_subject"))
    assert subject["spots"] == 1.0  # all 8 subject images round-trip with three separate spots (before: 0 of 8)
    assert subject["attributes"] == 1.0
    scenes = reconstruction_spots(vae, n=48)  # random spotted scenes: 0.22 before the refinement (training.json)
    assert scenes["spots"] >= 0.5


def test_refine_decoder_writes_the_vae_in_the_dtype_it_was_stored_in(tmp_path):
    """A regression: from_pretrained loads fp16 files as fp32, and the first refinement wrote the shipped VAE in fp32."""
    from sdft.toy.refine_decoder import refine_decoder, stored_dtype

    torch.manual_seed(0)
    toy_vae().to(torch.float16).save_pretrained(tmp_path / "model" / "vae")
    (tmp_path / "subject").mkdir()
    facts = refine_decoder(tmp_path / "model", tmp_path / "out", tmp_path / "subject", steps=1, batch_size=2)
    assert stored_dtype(tmp_path / "out" / "vae") == torch.float16
    assert facts["steps"] == 1 and set(facts["reconstruction_after"]) == {"random_spotted", "subject"}
    assert 0.0 <= facts["reconstruction_after"]["random_spotted"]["spots"] <= 1.0
    assert facts["reconstruction_after"]["subject"] == {"spots": None, "attributes": None}  # no subject images
