"""Save what was trained: LoRA files (or a full pipeline) every N steps, keeping the last K, and at the end.

Each LoRA save writes two files side by side: the diffusers/peft file (pytorch_lora_weights.safetensors) and the
kohya/A1111/ComfyUI file (<run name>.safetensors, with ss_* metadata); see docs/formats.md. Each step checkpoint also
holds `state.ckpt`, Lightning's checkpoint (trained weights only, optimizer, lr schedule, step, loops, callbacks'
state) that `resume=auto` continues from; on SIGTERM or Ctrl-C, GracefulStop writes one at the current step.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Callable

import lightning as L
import torch

from sdft.adapters.formats import LORA_WEIGHT_NAME, save_lora, save_pipeline
from sdft.adapters.kinds import has_kohya_format, is_peft_kind
from sdft.adapters.kohya import save_kohya_lora
from sdft.adapters.lycoris import a1111_dora_note
from sdft.adapters.sdxl_files import save_sdxl_weights, uses_sdxl_files
from sdft.callbacks.disk_space import disk_full, folder_bytes
from sdft.callbacks.pipeline_parts import PipelineParts
from sdft.config import AdapterKind
from sdft.atomic import atomic_path
from sdft.embeddings.files import save_trained, usage_lines
from sdft.errors import NonFiniteLossError
from sdft.families.sd1 import assemble_pipeline

log = logging.getLogger(__name__)
STATE_NAME = "state.ckpt"  # in every checkpoints/step_N/ folder
FINAL_STATE_NAME = "final_state.ckpt"  # in the phase folder: trained weights at the end (resume rebuilds the phase)


class LoraCheckpoint(L.Callback):
    """Writes <phase_dir>/checkpoints/step_<N>/ during training and <phase_dir>/lora (or model) at the end."""

    def __init__(
        self,
        phase_dir: Path,
        kind: AdapterKind,
        cb,
        parts: PipelineParts,
        *,
        kohya_name: str = "lora",
        kohya_metadata: Callable[[int, int], dict] | None = None,
        log_artifact: bool = False,
    ):
        """`cb`: the `callbacks` config section (checkpoint_every_n_steps, keep_last_k, kohya_fp16); `kohya_metadata`:
        the ss_* metadata at (step, epoch) (sdft.adapters.kohya.run_metadata); `log_artifact`: W&B, the final LoRA
        folder as an artifact."""
        self.phase_dir, self.kind = Path(phase_dir), kind
        self.kohya_name, self.kohya_metadata, self.kohya_fp16 = kohya_name, kohya_metadata, cb.kohya_fp16
        self.every_n_steps, self.keep_last_k = cb.checkpoint_every_n_steps, cb.keep_last_k
        self.tokenizer, self.scheduler = parts.tokenizer, parts.scheduler
        self.tokenizer_2 = parts.tokenizer_2  # SDXL's second tokenizer, for saving a full SDXL pipeline
        self.final_path: Path | None = None
        self.final_kohya_path: Path | None = None
        self.log_artifact = log_artifact
        self._last_step = -1  # with gradient accumulation several batches end on one step
        self.swap = (
            None  # factory(module) -> context manager putting other weights in place to save (sdft/training/ema.py)
        )
        self.keep: set[Path] = set()  # checkpoint folders never pruned: the likeness meter's recommended one

    def save(self, module: L.LightningModule, target: Path, name: str, step: int = 0, epoch: int = 0) -> Path:
        """Save into `target` (a folder); refuses weights that are not finite. Returns the main file/folder."""
        with (
            self.swap(module) if self.swap else contextlib.nullcontext()
        ):  # EMA weights (sdft/training/ema.py) when asked
            trained = [p for p in module.parameters() if p.requires_grad]
            if not all(torch.isfinite(p).all() for p in trained):
                raise NonFiniteLossError(
                    f"Trained weights are not finite (the loss became NaN/inf; with "
                    "loss.finite_check_every_n_steps > 1 it is caught late): nothing written to "
                    f"{target}. Resume from an earlier checkpoint with a lower optim.lr, or set "
                    "loss.finite_check_every_n_steps=1 to stop at the first bad step."
                )
            embedding = getattr(module, "embeddings", None)  # sdft.embeddings: textual inversion / pivotal tuning
            if self.kind == AdapterKind.embedding:
                return save_trained(embedding, target)["diffusers"]
            if uses_sdxl_files(module):  # a family test (docs/families.md): SDXL writes both text towers
                meta = self.kohya_metadata(step, epoch) if self.kohya_metadata else {}
                main = save_sdxl_weights(
                    module,
                    target,
                    name,
                    self.kind,
                    meta,
                    self.kohya_fp16,
                    self.tokenizer,
                    self.tokenizer_2,
                    self.scheduler,
                )
                if embedding is not None and is_peft_kind(self.kind):  # pivotal: beside the adapter and bundled
                    kohya = target / f"{name}.safetensors" if has_kohya_format(self.kind) else None
                    save_trained(embedding, target, kohya)
                return main
            if is_peft_kind(self.kind):
                meta = self.kohya_metadata(step, epoch) if self.kohya_metadata else {}
                kohya = None
                if has_kohya_format(
                    self.kind
                ):  # every peft kind (OFT as `.diff` weight differences: adapters/lycoris.py)
                    kohya = save_kohya_lora(
                        module.unet, module.text_encoder, target / f"{name}.safetensors", meta, self.kohya_fp16
                    )
                if embedding is not None:  # pivotal: the embedding beside the adapter, and bundled in the kohya file
                    save_trained(embedding, target, kohya)
                return save_lora(module.unet, module.text_encoder, target / LORA_WEIGHT_NAME)
            pipe = assemble_pipeline(module.unet, module.vae, module.text_encoder, self.tokenizer, self.scheduler)
            return save_pipeline(pipe, target)

    def _prune(self) -> None:
        steps = sorted((self.phase_dir / "checkpoints").glob("step_*"))
        for old in steps[: max(len(steps) - self.keep_last_k, 0)]:
            if old not in self.keep:  # the recommended checkpoint (sdft/callbacks/likeness.py) stays
                shutil.rmtree(old, ignore_errors=True)

    def save_state(self, trainer: L.Trainer, path: Path, weights_only: bool = False) -> None:
        """Lightning checkpoint to `path`, atomically; every rank must call it (the strategy writes on rank 0)."""
        with atomic_path(path, shared=True, owner=trainer.is_global_zero) as tmp:
            trainer.save_checkpoint(tmp, weights_only=weights_only)

    def checkpoint(self, trainer: L.Trainer, module) -> Path:
        """LoRA files (rank 0) and the resumable state (all ranks) in checkpoints/step_<N>/, then keep the last K."""
        step = trainer.global_step
        folder = self.phase_dir / "checkpoints" / f"step_{step:06d}"
        path = folder
        self._last_step = step
        try:
            if trainer.is_global_zero:
                path = self.save(module, folder, f"{self.kohya_name}-step{step:06d}", step, trainer.current_epoch)
            self.save_state(trainer, folder / STATE_NAME)
        except OSError as err:
            raise disk_full(err, folder, self._needed(module), whole=True) from err
        if trainer.is_global_zero:
            self._prune()
        return path

    def on_train_batch_end(self, trainer: L.Trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not self.every_n_steps or step == 0 or step % self.every_n_steps:
            return
        if step >= trainer.max_steps or step == self._last_step:
            return  # the final save covers the last step
        log.info("Checkpoint at step %d: %s", step, self.checkpoint(trainer, module))

    def _needed(self, module) -> int:
        """Bytes one checkpoint takes: the newest one's size, else 5x the trained weights (2 LoRA files, Adam's 2
        moments, the weights in state.ckpt)."""
        steps = sorted((self.phase_dir / "checkpoints").glob("step_*"))
        done = [s for s in steps if (s / STATE_NAME).is_file()]
        if done:
            return folder_bytes(done[-1])
        return 5 * sum(p.numel() * p.element_size() for p in module.parameters() if p.requires_grad)

    def on_train_end(self, trainer: L.Trainer, module) -> None:
        try:
            self.save_state(trainer, self.phase_dir / FINAL_STATE_NAME, weights_only=True)
        except OSError as err:
            raise disk_full(err, self.phase_dir, self._needed(module), whole=False) from err
        if not trainer.is_global_zero:
            return
        sub = "lora" if is_peft_kind(self.kind) else "embedding" if self.kind == AdapterKind.embedding else "model"
        folder = self.phase_dir / sub
        try:
            self.final_path = self.save(module, folder, self.kohya_name, trainer.global_step, trainer.current_epoch)
        except OSError as err:
            raise disk_full(err, folder, self._needed(module), whole=False) from err
        if is_peft_kind(self.kind):
            self.final_kohya_path = folder / f"{self.kohya_name}.safetensors" if has_kohya_format(self.kind) else None
            if self.log_artifact:
                log_lora_artifact(trainer, folder, self.kohya_name, trainer.global_step)
        what = "adapter" if is_peft_kind(self.kind) else "pipeline" if self.kind == AdapterKind.full else "embedding"
        log.info("Saved the trained %s to %s", what, self.final_path)
        kohya = self.final_kohya_path if is_peft_kind(self.kind) else None
        sdxl = uses_sdxl_files(module)
        if self.kind == AdapterKind.dora and kohya is not None:
            log.warning(a1111_dora_note(kohya, sdxl))
        embedding = getattr(module, "embeddings", None)
        if embedding is not None:  # textual inversion / pivotal: which file each client takes
            for line in usage_lines(embedding.token, folder, kohya, sdxl):
                log.info(line)


def log_lora_artifact(trainer: L.Trainer, folder: Path, name: str, step: int) -> None:
    """The LoRA folder as a W&B artifact (offline runs keep it for `wandb sync`)."""
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            import wandb

            artifact = wandb.Artifact(f"{name}-lora", type="lora", metadata={"step": step})
            artifact.add_dir(str(folder))
            logger.experiment.log_artifact(artifact)
