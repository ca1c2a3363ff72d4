"""Keep the process' resident memory to what the step reads (issue #21; sdft/memory.py says how and why it is safe).

Before the first training batch the pages of frozen models the step does not read are given back (the VAE when
latents are cached, the text encoders when their outputs are cached and they are not trained), and freed heap memory
(cache filling, the first fixed-noise measurement) goes back to the system. Later batches do it again only when the
resident set grew by REGROWTH since (a validation grid or the fixed-noise loss read them again): reading
/proc/self/statm costs microseconds, the page walk milliseconds, which a fast GPU or tiny-model step would feel.
"""

from __future__ import annotations

import logging

import lightning as L

from sdft.memory import drop_resident_pages, resident_bytes, trim_heap
from sdft.models.params import text_towers

log = logging.getLogger(__name__)


def unread_models(module, datamodule) -> list:
    """The frozen models the training step does not read, given the data module's caches."""
    models = []
    if getattr(datamodule, "latents", None) is not None:
        models.append(module.vae)
    if getattr(datamodule, "texts", None) is not None and not module.train_text_encoder:
        models += text_towers(module)
    return [m for m in models if not any(p.requires_grad for p in m.parameters())]


REGROWTH = 64 << 20  # bytes of resident-set growth after which the pages are given back again


class ResidentMemory(L.Callback):
    def __init__(self):
        self.after: int | None = None  # resident bytes after the last give-back; None: not done yet

    def on_train_batch_start(self, trainer: L.Trainer, module, batch, batch_idx) -> None:
        first = self.after is None
        if not first and resident_bytes() - self.after < REGROWTH:
            return
        models = unread_models(module, trainer.datamodule)
        if first:
            trim_heap()
        freed = drop_resident_pages(models) if models else 0
        if first and freed:
            log.info("Frozen weights the step does not read: %.0f MiB given back to the OS page cache.", freed / 2**20)
        self.after = resident_bytes()
