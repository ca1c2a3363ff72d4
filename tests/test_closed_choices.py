"""Closed choices are enums in the schema (issue 19): a value outside them fails when the config is composed, with a
message naming the key's allowed values."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException

from helpers.config import compose_config
from sdft.config import MissingCaptions, OnBadImages, StartMode


@pytest.mark.parametrize(
    "overrides,allowed",
    [
        (["phase.start=sideways"], "[fresh, continue, stack, merge]"),
        (["+experiment=dual_phase", "phases.1.start=sideways"], "[fresh, continue, stack, merge]"),
        (["data.on_bad_images=sideways"], "[error, skip]"),
        (["data.missing_captions=sideways"], "[warn, error]"),
    ],
)
def test_value_outside_a_closed_choice_fails_at_compose(overrides, allowed):
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(overrides)
    text = str(err.value) + str(err.value.__cause__ or "")
    assert "'sideways'" in text and f"expected one of {allowed}" in text


def test_closed_choices_compose_to_their_enums():
    cfg = compose_config(["phase.start=continue", "data.on_bad_images=skip", "data.missing_captions=error"])
    assert cfg.phase.start is StartMode["continue"] and cfg.phase.start == "continue"
    assert cfg.data.on_bad_images is OnBadImages.skip and cfg.data.missing_captions is MissingCaptions.error
    phases = compose_config(["+experiment=dual_phase"]).phases
    assert [p.start for p in phases] == [StartMode.fresh, StartMode.stack]


def test_data_check_names_the_allowed_values(tmp_path):
    from sdft.prep.check import load_data_config
    from sdft.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data.on_bad_images: .*'sideways'.*expected one of \[error, skip\]"):
        load_data_config(str(tmp_path), "photo of sks dog", ["on_bad_images=sideways"])
    assert load_data_config(str(tmp_path), "photo of sks dog", ["on_bad_images=skip"]).on_bad_images is OnBadImages.skip
