"""One real training step (forward, backward, optimizer step) and one validation-grid step traced on fake tensors.

The real module graph (diffusers U-Net, peft adapters, the framework's DreamBoothModule step, the configured torch
optimizer) runs under torch's `FakeTensorMode`: shapes, dtypes and devices only, no memory, no arithmetic. Live bytes
by kind and FLOPs (torch's FLOP formulas) come from `LiveBytes` (tracker.py: why not torch's MemTracker and
FlopCounterMode is said there). Counted, not traced: torch's Adam / AdamW state and step (optim_count.py: exact, and
~10 operators per trained tensor less to trace), bitsandbytes' 8-bit Adam (a C kernel that fake tensors cannot
enter; its state is 2 bytes a parameter plus block scales).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from omegaconf import DictConfig

from sdft.config import Attention
from sdft.models.loading import DTYPES
from sdft.models.params import text_towers
from sdft.run.plan.arch import Architecture, build_models, fake_mode
from sdft.run.plan.optim_count import CountedOptimizer, count, countable
from sdft.run.plan.tracker import LiveBytes

log = logging.getLogger(__name__)
GiB = 2**30
ADAM8BIT_BYTES_PER_PARAM = 2 + 2 * 4 / 256  # two uint8 states, one fp32 absmax each per 256-value block


@dataclass
class StepTrace:
    """Bytes at the step's peak by kind, FLOPs of one step, parameter counts (per model: trainable, total)."""

    weights: int  # frozen parameters and buffers
    trainable: int  # trained parameters, their gradients and the optimizer state
    activations: int
    workspace: int  # temporaries of the backward pass and kernels
    flops: int
    params: dict = field(default_factory=dict)
    trained_bytes: int = 0  # the trained parameters alone (the adapter file's size, fp32)
    notes: list[str] = field(default_factory=list)
    resident: int = 0  # what is resident before a step (weights, trained parameters, optimizer state)
    trained_tensors: int = 0  # the tensors the optimizer updates (its step's cost on a CPU: devices.py)
    trained_elements: int = 0  # their elements
    half_flops: int = 0  # of `flops`, those on bf16 / fp16 inputs (frozen half-precision weights under 32-true)
    weight_grad_flops: int = 0  # of `flops`, full-precision convolution weight gradients (a full fine-tune's)
    transient_peak: int = 0  # the most activations + workspace live at once in the step (>= their part of the peak)

    @property
    def peak(self) -> int:
        return self.weights + self.trainable + self.activations + self.workspace


@dataclass
class GenerationTrace:
    """A sampling call of `images` images (the grid renders a prompt's seeds in one call, the likeness meter up to
    its batch_size): peak bytes (with the training state resident), FLOPs per image per denoising step and per VAE
    decode."""

    peak: int
    step_flops: int
    decode_flops: int
    encode_flops: int = 0
    images: int = 1


def precision_context(precision: str):
    """Lightning's mixed precision is autocast around the step; true half precision casts the weights."""
    if precision.startswith("bf16-mixed"):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if precision.startswith("16-mixed"):
        return torch.autocast("cpu", dtype=torch.float16)
    return contextlib.nullcontext()


def fakeify(model: torch.nn.Module) -> None:
    """Meta parameters and buffers replaced by fake CPU tensors of the same shape, dtype and requires_grad (call in
    the fake mode). Models are built and adapted on the meta device first: peft and Module.to move parameters by
    swapping tensors, which the fake mode's weak references refuse."""
    for sub in model.modules():
        for key, t in sub._parameters.items():
            if t is not None:
                fake = torch.empty(t.shape, dtype=t.dtype, device="cpu")
                sub._parameters[key] = torch.nn.Parameter(fake, requires_grad=t.requires_grad)
        for key, t in sub._buffers.items():
            if t is not None:
                sub._buffers[key] = torch.zeros(t.shape, dtype=t.dtype, device="cpu")


def freeze(models: SimpleNamespace, cfg: DictConfig) -> None:
    """As sdft.models.loading.freeze_models + speed_options (its page-dropping dtype cast needs real storage)."""
    dtype = DTYPES[cfg.model.weight_dtype]
    for m in (models.unet, models.vae, *text_towers(models)):
        m.to(dtype=dtype)
        m.requires_grad_(False)
        m.eval()
    if cfg.model.gradient_checkpointing:
        models.unet.enable_gradient_checkpointing()
        for tower in text_towers(models):
            tower.gradient_checkpointing_enable()


def make_batch(cfg: DictConfig, module, size: tuple[int, int], *, text_cached: bool, latents_cached: bool) -> dict:
    """A batch shaped as the DataModule yields it (instances + as many class samples with prior preservation). The
    cache flags are keyword-only: passed positionally in the wrong order, they once made a different step."""
    n = cfg.data.batch_size * (2 if cfg.prior.enabled else 1)
    w, h = size
    batch: dict = {"is_prior": torch.zeros(n, dtype=torch.bool), "n_instance": cfg.data.batch_size}
    batch["is_prior"][cfg.data.batch_size :] = True
    if latents_cached:
        f = vae_factor(module)
        batch["latent_dist"] = torch.randn(n, 2 * module.vae.config.latent_channels, h // f, w // f)
    else:
        batch["pixel_values"] = torch.randn(n, 3, h, w)
    ids = module.conditioning.placeholder_ids(n)
    if text_cached:
        with torch.no_grad():
            batch.update(module.conditioning.encode(module, ids))
    else:
        batch["input_ids"] = ids
    batch.update(module.conditioning.placeholder_extras(n, h, w))
    return batch


def adapted_module(cfg: DictConfig, models: SimpleNamespace):
    from sdft.adapters.lora import start_phase
    from sdft.families import conditioning_for
    from sdft.models.tiny import SD15_SCHEDULER_CONFIG
    from sdft.training.module import DreamBoothModule, StepModels
    from diffusers import DDPMScheduler

    start_phase(models.unet, models.text_encoder, cfg.adapter, "fresh", None, models.text_encoder_2)
    train_te = any(p.requires_grad for m in text_towers(models) for p in m.parameters())
    with torch.device("cpu"):  # real tensors (betas, alphas) whether the models are on meta or not
        scheduler = DDPMScheduler.from_config(SD15_SCHEDULER_CONFIG)
    loss = cfg.loss.copy()
    loss.finite_check_every_n_steps = 2**31 - 1  # the loss check reads a value; fake tensors hold none (no memory)
    parts = StepModels(
        models.unet,
        models.text_encoder,
        models.vae,
        scheduler,
        text_encoder_2=models.text_encoder_2,
        conditioning=conditioning_for(models.family),
        clip_skip=cfg.model.clip_skip,
    )
    module = DreamBoothModule(
        parts, cfg.optim, loss, prior_loss_weight=cfg.prior.loss_weight, train_text_encoder=train_te
    )
    # outside a Trainer: what the step reads of it (global step 1: the finite check is off) and logging that does
    # nothing
    module.trainer = SimpleNamespace(max_steps=cfg.trainer.max_steps, global_step=1)
    module.log = lambda *args, **kwargs: None
    return module, train_te


def make_optimizer(cfg: DictConfig, module, notes: list[str]):
    """The configured optimizer with its state made (one step on zero gradients), or None for 8-bit Adam."""
    from sdft.training.optimizers import ADAMW, ADAMW_8BIT, optimizer_node

    target = optimizer_node(cfg.optim)["_target_"]
    if target == ADAMW_8BIT:
        return None
    if target != ADAMW:
        notes.append("optimizer state of optim.optimizer traced as its class makes it")
    opt = module.configure_optimizers()["optimizer"]
    warm_up(opt)
    return opt


def warm_up(opt) -> None:
    """One step on zero gradients: the state exists from the second step on (the steady-state peak includes it)."""
    params = [p for g in opt.param_groups for p in g["params"]]
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=True)


def plan_optimizer(cfg: DictConfig, module, notes: list[str]) -> tuple[object, CountedOptimizer | None]:
    """(optimizer, counted) for the trace: torch's Adam / AdamW counted from the parameter list (optim_count.py: no
    state made, the step not traced), 8-bit Adam counted (no optimizer), any other class made with its state, to be
    traced."""
    from sdft.training.optimizers import ADAMW_8BIT, optimizer_node

    if optimizer_node(cfg.optim)["_target_"] == ADAMW_8BIT:
        notes.append("8-bit Adam state counted as 2 bytes a parameter (+ block scales), not traced")
        n = sum(p.numel() for p in module.parameters() if p.requires_grad)
        return None, CountedOptimizer(int(n * ADAM8BIT_BYTES_PER_PARAM), 0)
    opt = module.configure_optimizers()["optimizer"]
    if countable(opt):
        return opt, count(opt)
    notes.append("optimizer state of optim.optimizer traced as its class makes it")
    warm_up(opt)
    return opt, None


def meta_models(arch: Architecture) -> SimpleNamespace:
    """The architecture's models on the meta device (no memory, no weights)."""
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        return build_models(arch)


def vae_factor(models: SimpleNamespace) -> int:
    return 2 ** (len(models.vae.config.block_out_channels) - 1)


def native_resolution(models: SimpleNamespace) -> int:
    sample = models.unet.config.sample_size
    return int((sample if isinstance(sample, int) else max(sample)) * vae_factor(models))


def trace(
    cfg: DictConfig,
    models: SimpleNamespace,
    size: tuple[int, int],
    latents_cached: bool,
    text_cached: bool,
    grid_size: tuple[int, int] | None = None,
    grid_images: int = 1,
) -> tuple[StepTrace, GenerationTrace]:
    """Trace one training step of `cfg` on `models` (from meta_models; adapted in place) at `size` (w, h), and one
    sampling step of `grid_images` images at `grid_size`."""
    notes: list[str] = []
    if cfg.model.attention == Attention.xformers:
        notes.append("attention=xformers traced as PyTorch SDPA (memory-efficient on both)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):
            freeze(models, cfg)
            module, _ = adapted_module(cfg, models)
        grid = grid_size or size
        return _traceadapted_module(cfg, module, models, size, latents_cached, text_cached, grid, grid_images, notes)


def _traceadapted_module(cfg, module, models, size, latents_cached, text_cached, grid_size, grid_images, notes):
    """The step and the sampling call, in one fake mode (the module's fake tensors belong to it)."""
    with fake_mode():
        fakeify(module)
        module.train()
        params = {}
        for name in ("unet", "text_encoder", "text_encoder_2"):
            m = getattr(models, name)
            if m is not None:
                params[name] = {
                    "trainable": sum(p.numel() for p in m.parameters() if p.requires_grad),
                    "total": sum(p.numel() for p in m.parameters()),
                }
        trained = [p for p in module.parameters() if p.requires_grad]
        trained_bytes = sum(p.numel() * p.element_size() for p in trained)
        opt, counted = plan_optimizer(cfg, module, notes)
        batch = make_batch(cfg, module, size, text_cached=text_cached, latents_cached=latents_cached)
        live = LiveBytes()
        live.track_module(module)
        if counted is None:
            live.track_optimizer(opt)
        else:
            live.live["trainable"] += counted.state
        resident = sum(live.live.values())  # weights, trained parameters, optimizer state: before the step
        with live:
            with precision_context(cfg.trainer.precision):
                loss = module.training_step(batch, 0)
            live.phase = "workspace"
            loss.backward()
            if counted is None:
                opt.step()
            else:  # the step's temporaries on top of what is live after backward (optim_count.py)
                live.observe(counted.step_peak)
            module.zero_grad(set_to_none=True)
        del loss
        at = live.at_peak
        step = StepTrace(
            at["weights"],
            at["trainable"],
            at["activations"],
            at["workspace"],
            live.flops,
            params,
            trained_bytes,
            notes,
            resident,
            len(trained),
            sum(p.numel() for p in trained),
            live.half_flops,
            live.weight_grad_flops,
            live.transient_peak,
        )
        gen = _trace_generation(module, opt, grid_size, live.live["trainable"], grid_images)
    return step, gen


def _trace_generation(module, opt, size: tuple[int, int], resident_trainable: int, images: int) -> GenerationTrace:
    """A sampling call of `images` images with classifier-free guidance, as the pipelines run it: text encoding and
    one U-Net step on a batch of 2 x images, the VAE decode of one (the grid and the meter decode one at a time:
    sdft/callbacks/validation_grid.py), with the training state (weights, trained parameters, optimizer state)
    resident."""
    module.eval()
    w, h = size
    dtype = module.unet.dtype
    live = LiveBytes()
    live.track_module(module)
    if opt is not None:
        live.track_optimizer(opt)
    live.live["trainable"] = max(live.live["trainable"], resident_trainable)
    live.peak = sum(live.live.values())
    with live, torch.no_grad():
        text = module.conditioning.encode(module, module.conditioning.placeholder_ids(2 * images))
        f = vae_factor(module)
        latents = torch.randn(images, module.vae.config.latent_channels, h // f, w // f)
        start = live.flops
        doubled = torch.cat([latents] * 2)  # the pipeline's guided batch: unconditional and conditional
        text_in, added = module.conditioning.unet_inputs(module, text, doubled)
        kwargs = {} if added is None else {"added_cond_kwargs": {k: v.to(dtype) for k, v in added.items()}}
        module.unet(doubled.to(dtype), torch.tensor([999] * 2 * images), text_in.to(dtype), **kwargs)
        unet_flops = (live.flops - start) // images
        del text, text_in, added, kwargs, doubled
        start = live.flops
        module.vae.decode(latents[:1].to(module.vae.dtype))
        decode_flops = live.flops - start
    return GenerationTrace(live.peak, unet_flops, decode_flops, images=images)
