"""Comparing pipelines: one small deterministic image each and their largest difference; equal weights."""

from __future__ import annotations

import numpy as np
import torch


def render(pipe, prompt: str = "photo of sks person") -> np.ndarray:
    """A 64 px, 2-step, seed-0 image as a float array: the tests' way to compare two pipelines' outputs."""
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        prompt, num_inference_steps=2, height=64, width=64, output_type="np", generator=torch.Generator().manual_seed(0)
    ).images


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max())


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """The same parameter and buffer names with bitwise equal values."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
