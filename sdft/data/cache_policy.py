"""When the latent and text-encoder caches are used (issue #21).

`data.cache_latents` / `data.cache_text_encoder_outputs`: true = asked for (a reason not to cache is a warning),
false = never, null (the default) = auto: cached whenever caching is exact, quietly skipped otherwise. Exact means the
step computes the same losses with the cache as without (tests/test_data_cache.py, tests/test_cache_policy.py):

- latents: the cache holds the VAE encoder's distribution per (image, size, crop, flip), and the step draws its sample
  from it as it would from a fresh encode; random crops cannot be listed ahead, so they are never cached. Auto also
  skips it when filling it would encode more images than the whole run would (a few steps over many images).
- text-encoder outputs: only while the text encoder (SDXL: both towers; and no embedding) is frozen and every caption
  is fixed (no tag shuffle, no caption dropout). An entry is the family's encoded text (sdft/families/base.py):
  SD 1.x the hidden states, SDXL both towers' penultimate states and the pooled embedding.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def _skip(setting: bool | None, what: str, why: str) -> bool:
    """Log why `what` is not cached (a warning when it was asked for); returns False."""
    (log.warning if setting else log.info)("data.%s: %s; not cached.", what, why)
    return False


def latent_cache_wanted(setting: bool | None, center_crop: bool) -> bool:
    if setting is False:
        return False
    if not center_crop:
        return _skip(setting, "cache_latents", "random crops cannot be cached, latents are computed every step")
    return True


def latent_cache_worth_it(setting: bool | None, entries: int, encodes_in_run: int | None) -> bool:
    """Auto mode: fill the cache only if that encodes no more images than the run's steps would."""
    if setting is None and encodes_in_run is not None and entries > encodes_in_run:
        return _skip(
            setting,
            "cache_latents",
            f"filling it would encode {entries} images, more than the {encodes_in_run} the run's steps encode",
        )
    return True


def text_cache_wanted(
    setting: bool | None, text_encoder_trained: bool, captions_fixed: bool, needs_token_ids: str | None = None
) -> bool:
    """`needs_token_ids`: why the step needs the captions' ids rather than cached states (the per-caption prior)."""
    if setting is False:
        return False
    if needs_token_ids:
        return _skip(setting, "cache_text_encoder_outputs", needs_token_ids)
    if text_encoder_trained:
        return _skip(setting, "cache_text_encoder_outputs", "the text encoder (or an embedding) is trained")
    if not captions_fixed:
        return _skip(setting, "cache_text_encoder_outputs", "captions change (shuffle/dropout)")
    return True


def encodes_in_run(max_steps: int | None, batch_size: int, with_classes: bool) -> int | None:
    """Images the VAE would encode over the whole run without a cache (None: unknown length)."""
    if not max_steps or max_steps < 0:
        return None
    return max_steps * batch_size * (2 if with_classes else 1)
