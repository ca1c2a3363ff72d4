"""The likeness meter's prompts: the training caption, the class prompt and a varied set per class word (other
clothing, setting, style), so that identity that appears only for the training caption shows as low flexibility."""

from __future__ import annotations

from sdft.data.captions import subject_words
from sdft.evaluation.prompts import spread

from dataclasses import dataclass


PEOPLE = ("person", "man", "woman", "boy", "girl", "child", "face", "guy", "lady")
VARIED = {
    "person": [
        "a photo of {identifier} {cls} wearing a red sweater",
        "a photo of {identifier} {cls} in a business suit, in an office",
        "a photo of {identifier} {cls} on a beach at sunset",
        "an oil painting of {identifier} {cls}",
        "a photo of {identifier} {cls} wearing a hat, in the snow",
        "a pencil sketch of {identifier} {cls}",
    ],
    "object": [
        "a photo of {identifier} {cls} on a beach",
        "a photo of {identifier} {cls} in the snow",
        "a photo of {identifier} {cls} in a kitchen",
        "an oil painting of {identifier} {cls}",
        "a photo of {identifier} {cls} in a city street at night",
        "a pencil sketch of {identifier} {cls}",
    ],
    # the toy world draws only backgrounds as settings (sdft/toy/world.py): the subject on each other background
    "toy": [
        "a {identifier} {cls} on a pink background",
        "a {identifier} {cls} on a black background",
        "a {identifier} {cls} on a gray background",
        "a {identifier} {cls} on a white background",
    ],
}


@dataclass(frozen=True)
class MeterPrompts:
    instance: str  # the training caption: likeness
    cls: str  # the class prompt: leakage
    varied: list[str]  # flexibility (and prompt adherence)


def meter_prompts(data_cfg, likeness_cfg, toy: bool = False, eval_cfg=None) -> MeterPrompts:
    """The prompts of one run: data.instance_prompt, data.class_prompt (default `a <class word>`), and
    callbacks.likeness.flex_prompts or the default set of the class word (people / objects / toy world); the
    identifier and class word as `sdft eval` finds them (eval.identifier / eval.class_noun when set)."""
    ident, noun = (eval_cfg.identifier, eval_cfg.class_noun) if eval_cfg is not None else (None, None)
    identifier, cls = subject_words(data_cfg.instance_prompt, data_cfg.class_prompt, data_cfg.trigger, ident, noun)
    templates = list(likeness_cfg.flex_prompts)
    if not templates:
        kind = "toy" if toy else "person" if cls in PEOPLE else "object"
        templates = spread(VARIED[kind], likeness_cfg.num_flex_prompts)
    varied = [t.format(identifier=identifier, cls=cls) for t in templates]
    instance = data_cfg.instance_prompt or f"a photo of {identifier} {cls}"
    return MeterPrompts(instance, data_cfg.class_prompt or f"a {cls}", varied)
