"""The training-step benchmark's harness (bench/train_step.py is its command line): the models set up as the framework
sets them up, synthetic batches, the framework round (a real lightning.Trainer) and the bare PyTorch loop, FLOPs,
peak memory and steady-state figures."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import lightning as L  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from sdft.adapters.lora import setup_trainable  # noqa: E402

from sdft.models.params import count_params  # noqa: E402
from sdft.config import AdapterConfig, Attention, LossConfig, ModelConfig, OptimConfig, WeightDtype  # noqa: E402
from sdft.models.loading import freeze_models, make_noise_scheduler, speed_options  # noqa: E402
from sdft.models.quantize import quantize_models  # noqa: E402
from sdft.training.module import DreamBoothModule, StepModels  # noqa: E402


CACHE_NOTE = (
    "cache-latents: bench-made batches of latent_dist + encoder_hidden_states, shaped as the DataModule's "
    "latent/text cache yields them (VAE encoder and text encoder skipped, text encoder frozen)"
)


# ----------------------------------------------------------------------------------------------------------------
# memory
# ----------------------------------------------------------------------------------------------------------------
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak RSS (CPU) or peak allocated/reserved CUDA memory over a `with` block."""

    def __init__(self, device: torch.device):
        self.device = device
        self.rss_reset = False

    def __enter__(self):
        gc.collect()
        _malloc_trim()
        try:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.rss_reset = True
        except OSError:
            self.rss_reset = False
        self.rss_start_mb = _status_kb("VmRSS") / 1024
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.cuda_start_gb = torch.cuda.memory_allocated() / 2**30
        return self

    def __exit__(self, *exc):
        self.peak_rss_mb = _status_kb("VmHWM") / 1024
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_alloc_gb = torch.cuda.max_memory_allocated() / 2**30
            self.peak_reserved_gb = torch.cuda.max_memory_reserved() / 2**30
        return False

    def as_dict(self) -> dict:
        out = {
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "rss_start_mb": round(self.rss_start_mb, 1),
            "peak_rss_is_phase_peak": self.rss_reset,
        }
        if self.device.type == "cuda":
            out.update(
                peak_alloc_gb=round(self.peak_alloc_gb, 3),
                peak_reserved_gb=round(self.peak_reserved_gb, 3),
                alloc_start_gb=round(self.cuda_start_gb, 3),
            )
        return out


# ----------------------------------------------------------------------------------------------------------------
# models and data
# ----------------------------------------------------------------------------------------------------------------
def build_models(name: str):
    """(unet, vae, text_encoder, noise_scheduler, vocab_size): the tiny model or the SD 1.5 architecture (random)."""
    from diffusers import PNDMScheduler

    from sdft.models.tiny import SD15_SCHEDULER_CONFIG

    if name == "tiny":
        from sdft.models.tiny import build_tiny_pipeline

        pipe = build_tiny_pipeline()
        unet, vae, te = pipe.unet, pipe.vae, pipe.text_encoder
    else:
        from sdft.models.sd15_arch import build_sd15_text_encoder, build_sd15_unet, build_sd15_vae

        unet, vae, te = build_sd15_unet(), build_sd15_vae(), build_sd15_text_encoder()
    holder = SimpleNamespace(unet=unet, vae=vae, text_encoder=te, scheduler=PNDMScheduler(**SD15_SCHEDULER_CONFIG))
    return holder, make_noise_scheduler(holder), te.config.vocab_size


def load_group(group: str, name: str, schema):
    """conf/<group>/<name>.yaml merged onto its dataclass schema, as Hydra would."""
    path = REPO / "conf" / group / f"{name}.yaml"
    merged = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.load(path))
    return OmegaConf.to_object(merged)


def make_batches(n: int, batch: int, resolution: int, vocab: int, seed: int) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        out.append(
            {
                "pixel_values": torch.rand(batch, 3, resolution, resolution, generator=gen) * 2 - 1,
                "input_ids": torch.randint(0, vocab, (batch, 77), generator=gen),
                "is_prior": torch.zeros(batch, dtype=torch.bool),
                "n_instance": batch,  # a plain int, as the DataModule's batches carry it (no device sync in the step)
            }
        )
    return out


@torch.no_grad()
def cache_batches(batches: list[dict], vae, te, device) -> list[dict]:
    """What the DataModule yields with latents and text outputs cached (sdft/data/cache.py, dataset.py): the VAE
    encoder's distribution parameters (B, 8, H/8, W/8), sampled each step, and the text states (B, 77, D)."""
    out = []
    for b in batches:
        params = vae.encode(b["pixel_values"].to(device, vae.dtype)).latent_dist.parameters
        text = te(b["input_ids"].to(device))[0]
        out.append(
            {
                "latent_dist": params.float().cpu(),
                "encoder_hidden_states": text.float().cpu(),
                "is_prior": b["is_prior"],
                "n_instance": b["n_instance"],
            }
        )
    return out


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, batches: list[dict], length: int):
        self.batches, self.length = batches, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        return self.batches[i % len(self.batches)]


# ----------------------------------------------------------------------------------------------------------------
# the bare loop
# ----------------------------------------------------------------------------------------------------------------
def autocast_for(precision: str, device: torch.device):
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def bare_loss(m: SimpleNamespace, batch: dict, device: torch.device) -> torch.Tensor:
    """The framework's math with no framework: encode, noise, text encoder, U-Net, MSE (all samples are instances).

    Model dtypes are read once per round (m.unet_dtype, m.vae_dtype): diffusers' ``ModelMixin.dtype`` walks every
    sub-module on each access, which the framework's step does three times per step.
    """
    if "latent_dist" in batch:
        with torch.no_grad():
            dist = DiagonalGaussianDistribution(batch["latent_dist"].to(device, m.vae_dtype, non_blocking=True))
            latents = dist.sample().float() * m.vae.config.scaling_factor
        text = batch["encoder_hidden_states"].to(device, non_blocking=True)
    else:
        with torch.no_grad():
            pixels = batch["pixel_values"].to(device, m.vae_dtype, non_blocking=True)
            latents = (m.vae.encode(pixels).latent_dist.sample() * m.vae.config.scaling_factor).float()
        with torch.set_grad_enabled(m.train_te):
            text = m.text_encoder(batch["input_ids"].to(device, non_blocking=True))[0]
    latents = latents.contiguous()
    noise = torch.randn_like(latents)
    timesteps = torch.randint(0, m.sched.config.num_train_timesteps, (latents.shape[0],), device=device).long()
    noisy = m.sched.add_noise(latents, noise, timesteps)
    pred = m.unet(noisy.to(m.unet_dtype), timesteps, text.to(m.unet_dtype)).sample.float()
    return F.mse_loss(pred, noise)


def make_optimizer(param_groups: list[dict], optim: OptimConfig, max_steps: int):
    from diffusers.optimization import get_scheduler

    from sdft.training.optimizers import build_optimizer, optimizer_node

    # the framework's route (DreamBoothModule.configure_optimizers): AdamW fused when the parameters are on a GPU
    on_gpu = all(p.is_cuda for g in param_groups for p in g["params"])
    opt = build_optimizer(optimizer_node(optim, on_gpu), param_groups, optim.lr)
    return opt, get_scheduler(optim.scheduler, opt, num_warmup_steps=optim.warmup_steps, num_training_steps=max_steps)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_round(m: SimpleNamespace, param_groups, batches, args, device) -> list[float]:
    total = args.warmup + args.steps
    m.unet_dtype, m.vae_dtype = m.unet.dtype, m.vae.dtype
    opt, sched = make_optimizer(param_groups, m.optim, total)
    params = [p for g in param_groups for p in g["params"]]
    scaler = torch.amp.GradScaler(device.type) if args.precision == "16-mixed" else None
    times = []
    for i in range(total):
        with autocast_for(args.precision, device):
            loss = bare_loss(m, batches[i % len(batches)], device)
        if scaler is not None:
            scaler.scale(loss).backward()
            if args.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            if args.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
            opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if i == args.warmup - 1 or i == total - 1:
            sync(device)
        times.append((time.perf_counter(), time.process_time()))
    del opt, sched
    return times


# ----------------------------------------------------------------------------------------------------------------
# the framework
# ----------------------------------------------------------------------------------------------------------------
class StepTimer(L.Callback):
    """perf_counter() at the end of every training batch; CUDA is synchronised only at the two ends measured."""

    def __init__(self, warmup: int, total: int, device: torch.device):
        self.warmup, self.total, self.device = warmup, total, device
        self.times: list[tuple[float, float]] = []  # (wall, process CPU) seconds
        self.modes: dict[str, bool] = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if not self.times:  # the train/eval modes the framework actually trains in
            self.modes = {name: getattr(module, name).training for name in ("unet", "text_encoder", "vae")}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        n = len(self.times) + 1
        if n == self.warmup or n == self.total:
            sync(self.device)
        self.times.append((time.perf_counter(), time.process_time()))


def framework_round(module: DreamBoothModule, batches, args, device) -> list[float]:
    total = args.warmup + args.steps
    timer = StepTimer(args.warmup, total, device)
    root = tempfile.mkdtemp(prefix="sdft-bench-")
    try:
        trainer = L.Trainer(
            accelerator=device.type if device.type == "cpu" else "gpu",
            devices=1,
            precision=args.precision,
            max_steps=total,
            max_epochs=-1,
            gradient_clip_val=args.grad_clip if args.grad_clip > 0 else None,
            log_every_n_steps=10,  # the framework's default (conf/trainer/default.yaml)
            logger=False,
            callbacks=[timer],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            default_root_dir=root,
        )
        loader = torch.utils.data.DataLoader(
            ListDataset(batches, total), batch_size=None, shuffle=False, num_workers=0, pin_memory=device.type == "cuda"
        )
        # Lightning 2.6 never calls module.train() in fit; in a default sdft run the fixed_noise_loss callback's
        # eval()/train() round trip at train start sets DreamBoothModule's modes (trained parts train, VAE eval).
        # Do the same here, so the benchmark trains in the modes a default run trains in.
        module.train()
        trainer.fit(module, train_dataloaders=loader)
        if trainer.global_step != total:
            raise RuntimeError(f"framework ran {trainer.global_step} steps, expected {total}")
    finally:
        module._trainer = None
        shutil.rmtree(root, ignore_errors=True)
    return timer.times, timer.modes


def clear_grads(*models) -> None:
    for model in models:
        for p in model.parameters():
            p.grad = None


# ----------------------------------------------------------------------------------------------------------------
# FLOPs
# ----------------------------------------------------------------------------------------------------------------
def count_flops_per_image(m: SimpleNamespace, batch: dict, device: torch.device) -> int:
    """FLOPs of one forward + backward (VAE encode, text encoder, U-Net) for one image, before gradient
    checkpointing and xformers are switched on (so recomputation is not counted: model FLOPs, for MFU)."""
    from torch.utils.flop_counter import FlopCounterMode

    one = {k: (v[:1] if torch.is_tensor(v) else 1) for k, v in batch.items()}  # n_instance: 1
    with FlopCounterMode(display=False) as counter:
        loss = bare_loss(m, one, device)
        loss.backward()
    clear_grads(m.unet, m.text_encoder)
    return int(counter.get_total_flops())


# ----------------------------------------------------------------------------------------------------------------
# setup and figures
# ----------------------------------------------------------------------------------------------------------------
def build_setup(args, device: torch.device) -> SimpleNamespace:
    """The models, set up in the framework's order (sdft.run.wiring.prepare: frozen dtype, then the adapter, then
    attention / checkpointing / channels_last), the module, its parameter groups and the batches. The FLOPs are
    counted before checkpointing and xformers are switched on, so that they are model FLOPs."""
    t0 = time.perf_counter()
    holder, sched, vocab = build_models(args.model)
    adapter = load_group("adapter", args.adapter, AdapterConfig)
    if args.rank is not None:
        adapter.rank = args.rank
    notes = []
    if args.cache_latents or args.freeze_text_encoder:
        adapter.train_text_encoder = False
        if args.adapter != "full":
            notes.append("text encoder frozen")
    if args.cache_latents:
        notes.append(CACHE_NOTE)
    if adapter.kind.value == "lora" and not adapter.train_unet and not adapter.train_text_encoder:
        raise SystemExit("nothing to train")
    if args.attention == Attention.xformers.value and device.type != "cuda":
        raise SystemExit("--attention xformers needs CUDA")
    model_cfg = ModelConfig(
        path=args.model,
        weight_dtype=WeightDtype(args.weight_dtype),
        attention=Attention(args.attention),
        gradient_checkpointing=args.grad_checkpointing,
        channels_last=args.channels_last,
    )
    freeze_models(holder, model_cfg)
    quantize_models(holder, getattr(args, "quantize", None))  # model.quantize, as prepare_models does
    setup_trainable(holder.unet, holder.text_encoder, adapter)
    optim = load_group("optim", args.optim, OptimConfig)
    if args.no_fused:
        optim.optimizer["fused"] = False
    train_te = any(p.requires_grad for p in holder.text_encoder.parameters())
    trainable = {name: count_params(m)[0] for name, m in (("unet", holder.unet), ("text_encoder", holder.text_encoder))}

    m = SimpleNamespace(
        unet=holder.unet, vae=holder.vae, text_encoder=holder.text_encoder, sched=sched, train_te=train_te, optim=optim
    )
    raw_batches = make_batches(4, args.batch, args.resolution, vocab, args.seed)

    flops = None
    if args.flops == "on" or (args.flops == "auto" and device.type == "cuda"):
        for model in (m.unet, m.vae, m.text_encoder):
            model.to(device)
        one = raw_batches[0]
        m.unet_dtype, m.vae_dtype = m.unet.dtype, m.vae.dtype
        if args.cache_latents:  # VAE encode and text encoder are not run per step then
            one = cache_batches(
                [{**{k: v[:1] for k, v in one.items() if torch.is_tensor(v)}, "n_instance": 1}],
                m.vae,
                m.text_encoder,
                device,
            )[0]
        flops = count_flops_per_image(m, one, device)

    speed_options(holder, model_cfg)  # the rest of the framework's prepare_models
    if args.compile:
        m.unet.compile()

    batches = raw_batches
    if args.cache_latents:
        for model in (m.vae, m.text_encoder):
            model.to(device)
        batches = cache_batches(raw_batches, m.vae, m.text_encoder, device)
    for model in (m.unet, m.vae, m.text_encoder):
        model.to("cpu")  # the framework round starts from CPU, as in sdft.run.wiring.prepare(); Lightning moves it
    if device.type == "cuda":
        torch.cuda.empty_cache()
    build_s = time.perf_counter() - t0

    models = StepModels(m.unet, m.text_encoder, m.vae, sched)
    module = DreamBoothModule(models, optim, LossConfig(), prior_loss_weight=1.0, train_text_encoder=train_te)
    return SimpleNamespace(
        m=m,
        module=module,
        param_groups=module.param_groups(),
        batches=batches,
        flops=flops,
        notes=notes,
        adapter=adapter,
        train_te=train_te,
        trainable=trainable,
        build_s=build_s,
    )


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def summarize(times: list[tuple[float, float]], warmup: int, steps: int, batch: int) -> dict:
    """Steady-state figures; cpu_util = process CPU seconds / wall seconds over the measured steps (on a quiet
    machine about the number of torch threads; much lower means other processes took the cores)."""
    wall = [t[0] for t in times]
    span = wall[-1] - wall[warmup - 1]
    per_step = [b - a for a, b in zip(wall[warmup - 1 : -1], wall[warmup:])]
    cpu = times[-1][1] - times[warmup - 1][1]
    return {
        "img_s": round(steps * batch / span, 4),
        "s_per_step": round(span / steps, 4),
        "s_per_step_median": round(statistics.median(per_step), 4),
        "cpu_util": round(cpu / span, 2),
    }


def loadavg() -> float:
    with contextlib.suppress(OSError):
        with open("/proc/loadavg") as fh:
            return float(fh.read().split()[0])
    return -1.0
