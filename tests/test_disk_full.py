"""A full disk while a checkpoint is written: one clear error with the space needed, the partial write removed,
earlier checkpoints still resumable (issue 20, item 8). ENOSPC is simulated by patching the writer."""

from __future__ import annotations

import errno

import lightning as L
import pytest
import torch

from sdft.errors import SdftError
from sdft.run.train import run


def test_disk_full_at_a_checkpoint(fast_config, monkeypatch, tmp_path):
    original = L.Trainer.save_checkpoint

    def save_checkpoint(self, filepath, *args, **kwargs):
        if self.global_step >= 2:  # the step-1 checkpoint is written; step 2's runs out of space half-way
            with open(filepath, "wb") as f:
                f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(filepath))
        return original(self, filepath, *args, **kwargs)

    monkeypatch.setattr(L.Trainer, "save_checkpoint", save_checkpoint)
    with pytest.raises(SdftError, match=r"needs about [\d.]+ MiB") as err:
        run(
            fast_config(
                "callbacks.checkpoint_every_n_steps=1", "trainer.max_steps=3", "callbacks.fixed_noise_loss=false"
            )
        )
    assert "resume=auto" in str(err.value)
    out = tmp_path / "out" / "main"
    assert not [p for p in out.rglob("*") if "tmp" in p.name], "a partial temp file was left behind"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000001"]
    state = torch.load(out / "checkpoints" / "step_000001" / "state.ckpt", weights_only=True)
    assert state["global_step"] == 1
