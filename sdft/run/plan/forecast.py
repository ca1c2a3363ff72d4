"""One phase's forecast: data, parameters, files, peak memory and time on a device, from the traced step."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig

from sdft.config import AdapterKind
from sdft.run.plan.arch import Architecture
from sdft.run.plan.data_summary import DataSummary, summarise
from sdft.run.plan.devices import Device
from sdft.run.plan.trace import GiB, GenerationTrace, StepTrace, meta_models, native_resolution, trace
from sdft.run.plan import trace_cache

MiB = 2**20


@dataclass
class PhaseForecast:
    name: str
    data: DataSummary
    step: StepTrace
    generation: GenerationTrace
    device: Device
    precision: str
    grids: int  # grid renders in the phase (start, every N steps, end)
    grid_images: int
    files: dict[str, int] = field(default_factory=dict)  # what the phase writes -> bytes
    caches: tuple[bool, bool] = (False, False)  # (latents, text) cached in the traced step

    def heap(self, transient: int) -> int:
        """What the host's C heap keeps resident on top of a peak with `transient` bytes of tensors made and freed
        within the step (devices.py: cpu only)."""
        return int(self.device.heap_share * max(transient, 0))

    @property
    def step_heap(self) -> int:
        """The heap term of the most transient memory the step ever holds: freed blocks stay resident after it, also
        when the step peaks later (a full fine-tune at its optimizer step, its activations long freed)."""
        return self.heap(max(self.step.transient_peak, self.step.activations + self.step.workspace))

    @property
    def step_peak(self) -> int:
        return self.step.peak + self.step_heap

    @property
    def grid_peak(self) -> int:
        return self.generation.peak + self.heap(self.generation.peak - self.step.resident)

    @property
    def peak(self) -> int:
        return max(self.step_peak, self.grid_peak)

    def seconds(self, flops: float) -> float:
        return flops / (self.device.peak_flops(self.precision) * self.device.efficiency_for(self.precision))

    @property
    def optimizer_seconds(self) -> float:
        """The optimizer step's own time, once per (accumulated) step: element-wise work FLOPs do not count."""
        return self.device.optimizer_seconds(self.step.trained_tensors, self.step.trained_elements)

    @property
    def step_seconds(self) -> float:
        return self.flop_seconds + self.optimizer_seconds

    @property
    def flop_seconds(self) -> float:
        """The step's FLOPs over the device's rate for the precision; at full precision, the FLOPs of operators on
        16-bit inputs (a base whose frozen weights are bf16, model.weight_dtype) at the half-precision rate, and the
        convolutions' weight gradients (trained convolutions: a full fine-tune) at the device's rate for them."""
        n = self.data.accumulate
        flops, half, wgrad = self.step.flops * n, self.step.half_flops * n, self.step.weight_grad_flops * n
        d = self.device
        if self.precision.startswith(("bf16", "16")):
            return self.seconds(flops)
        seconds = self.seconds(flops - half - wgrad)
        if half:
            seconds += half / (d.peak_flops("bf16-mixed") * d.efficiency_for("bf16-mixed"))
        if wgrad:
            seconds += wgrad / (d.peak_flops(self.precision) * (d.weight_grad_efficiency or d.efficiency))
        return seconds

    @property
    def image_flops(self) -> tuple[int, int]:
        """One generated image (classifier-free guidance): FLOPs of a denoising step (U-Net, batch 2) and the decode."""
        return self.generation.step_flops, self.generation.decode_flops

    def generation_seconds(self, images: int, steps: int) -> float:
        unet, decode = self.image_flops
        return self.seconds(images * (steps * unet + decode))

    def total_seconds(self, cfg: DictConfig) -> dict[str, float]:
        steps = cfg.callbacks.validation_steps
        out = {
            "train": self.data.steps * self.step_seconds,
            "class_images": self.generation_seconds(self.data.class_to_generate, cfg.prior.generation_steps),
            "grids": self.generation_seconds(self.grid_images, steps),
        }
        out["likeness"] = likeness_seconds(cfg, self.generation_seconds(likeness_images(cfg), steps), out["train"])
        out["total"] = sum(out.values())
        return out


def likeness_images(cfg: DictConfig) -> int:
    """Images of one likeness measurement, as the meter counts them (the instance and the class prompt at each seed,
    each varied prompt at each flex seed); 0 with the meter off or, as in training, when the prompts do not name the
    subject's identifier and class (the scorer's availability is not checked: that needs its model)."""
    from sdft.errors import ConfigError
    from sdft.evaluation.likeness import LikenessMeter
    from sdft.evaluation.likeness_prompts import meter_prompts

    lk = cfg.callbacks.likeness
    if not lk.enabled:
        return 0
    try:
        prompts = meter_prompts(cfg.data, lk, toy=cfg.model.path == "toy", eval_cfg=cfg.eval)
    except ConfigError:
        return 0
    return LikenessMeter(None, prompts, list(lk.seeds), list(lk.flex_seeds), lk.batch_size).images_per_measurement()


def likeness_seconds(cfg: DictConfig, one: float, train: float) -> float:
    """The meter's time: the final measurement, always taken, and one per step checkpoint while they stay within
    likeness.max_share of the training time (sdft/callbacks/likeness.py `within_budget`)."""
    every = cfg.callbacks.checkpoint_every_n_steps
    checkpoints = (cfg.trainer.max_steps - 1) // every if every else 0
    share = cfg.callbacks.likeness.max_share
    return one + (min(checkpoints * one, share * train) if share else checkpoints * one)


def sampling_batch(cfg: DictConfig) -> int:
    """The most images one sampling call renders during training: a grid row (one image per validation seed) or a
    likeness-meter batch (likeness.batch_size of its samples): the generation-time peak's batch."""
    lk = cfg.callbacks.likeness
    return max(len(cfg.callbacks.validation_seeds), min(lk.batch_size, likeness_images(cfg)), 1)


def caches_used(cfg: DictConfig, trains_text: bool) -> tuple[bool, bool]:
    """Whether the latent and text caches are on for this config (sdft/data/cache_policy.py's rules, quietly)."""
    d = cfg.data
    latents = d.cache_latents is not False and d.center_crop
    fixed = not d.shuffle_caption and d.caption_dropout == 0
    text = d.cache_text_encoder_outputs is not False and not trains_text and fixed and not cfg.prior.base_prediction
    return latents, text


def _trains_text(cfg: DictConfig) -> bool:
    a = cfg.adapter
    return bool(a.train_text_encoder and (a.kind in (AdapterKind.full,) or a.text_encoder_targets)) or bool(
        a.embedding.placeholder
    )


def _files(cfg: DictConfig, step: StepTrace) -> dict[str, int]:
    cb = cfg.callbacks
    trained = step.trained_bytes
    if cfg.adapter.kind == AdapterKind.full:
        total = sum(v["total"] for v in step.params.values()) * 4
        files = {"final pipeline folder (fp32 trained weights)": total}
    else:
        files = {
            "final LoRA (diffusers/peft)": trained,
            "final LoRA (kohya/A1111)": trained // (2 if cb.kohya_fp16 else 1),
        }
    files["final_state.ckpt (weights + optimizer state)"] = 3 * trained
    if cb.checkpoint_every_n_steps:
        saves = min(cb.keep_last_k, cfg.trainer.max_steps // cb.checkpoint_every_n_steps)
        files[f"checkpoints kept ({saves} x files + state.ckpt)"] = saves * (sum(files.values()))
    return files


def grid_count(cfg: DictConfig) -> int:
    cb = cfg.callbacks
    n = 1 + (1 if cb.validation_at_start else 0)
    if cb.validation_every_n_steps:
        n += (cfg.trainer.max_steps - 1) // cb.validation_every_n_steps
    return n


def forecast_phase(cfg: DictConfig, data, arch: Architecture, device: Device) -> PhaseForecast:
    """`cfg`, `data`: a checked phase config and its PhaseData (sdft/run/plan/compose.py)."""
    from sdft.data.buckets import with_native_sizes

    models = meta_models(arch)
    with_native_sizes(data.settings, native_resolution(models))
    cfg.data = data.settings
    summary = summarise(cfg, data)
    caches = caches_used(cfg, _trains_text(cfg))
    grid_res = cfg.callbacks.validation_resolution or cfg.data.resolution
    key = trace_cache.trace_key(cfg, arch, summary.largest, caches[0], caches[1], (grid_res, grid_res))
    traced = trace_cache.load(key)
    if traced is None:
        traced = trace(cfg, models, summary.largest, caches[0], caches[1], (grid_res, grid_res), sampling_batch(cfg))
        trace_cache.store(key, *traced)
    step, gen = traced
    from sdft.data.folders import default_validation_prompts

    prompts = len(cfg.callbacks.validation_prompts or default_validation_prompts(data.settings, data.report.concepts))
    grids = grid_count(cfg)
    images = grids * prompts * len(cfg.callbacks.validation_seeds)
    return PhaseForecast(
        cfg.phase.name, summary, step, gen, device, cfg.trainer.precision, grids, images, _files(cfg, step), caches
    )


def gib(n: float) -> float:
    return n / GiB


__all__ = ["PhaseForecast", "forecast_phase", "gib", "MiB"]
