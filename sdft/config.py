"""Typed configuration schemas, registered in Hydra's ConfigStore.

Every YAML file under ``conf/`` is merged onto these dataclasses, so a misspelt key or a value of the wrong type
fails when the config is composed, before anything is loaded, with Hydra's message naming the key.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

TINY_MODEL = "tiny"  # model.path value that selects the offline tiny SD1-shaped model
TOY_MODEL = "toy"  # model.path value that selects the pretrained toy-world base (sdft/toy/MODEL_CARD.md)
SDXL_TINY_MODEL = (
    "sdxl_tiny"  # model.path value that selects the offline tiny SDXL-shaped model (sdft/models/sdxl_tiny.py)
)


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric config field (each element, for a list): declared once, on the field, with
    `ranged`; sdft/run/checks.py checks every field from it before anything loads. Bounds of None are open ends; a value
    must also be finite."""

    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None
    why: str = ""  # what the value means, said in the error message

    def __contains__(self, value: float) -> bool:
        return (
            math.isfinite(value)
            and (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )

    def text(self) -> str:
        """e.g. `>= 1`, `> 0`, `in [0, 1)`, `a finite number`."""
        low = (f"{self.ge:g}", "[") if self.ge is not None else (f"{self.gt:g}", "(") if self.gt is not None else None
        high = (f"{self.le:g}", "]") if self.le is not None else (f"{self.lt:g}", ")") if self.lt is not None else None
        if low and high:
            return f"in {low[1]}{low[0]}, {high[0]}{high[1]}"
        if low:
            return f"{'>=' if low[1] == '[' else '>'} {low[0]}"
        if high:
            return f"{'<=' if high[1] == ']' else '<'} {high[0]}"
        return "a finite number"


def ranged(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, **bounds: Any) -> Any:
    """A dataclass field with its valid Range in the metadata: `ranged(1, ge=1, why="images per batch")`; lists take
    `factory=` and the range holds for each element."""
    return field(default=default, default_factory=factory, metadata={"range": Range(**bounds)})


def field_range(f: dataclasses.Field) -> Range | None:
    """The Range a schema field declares, None for non-numeric fields."""
    return f.metadata.get("range")


class WeightDtype(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class Quantize(str, Enum):
    int8 = "int8"
    fp8 = "fp8"
    nf4 = "nf4"


class ModelFamily(str, Enum):
    sd1 = "sd1"
    sd2 = "sd2"
    sdxl = "sdxl"


class Attention(str, Enum):
    sdpa = "sdpa"
    xformers = "xformers"


class PredictionType(str, Enum):
    epsilon = "epsilon"
    v_prediction = "v_prediction"


class AdapterKind(str, Enum):
    lora = "lora"
    full = "full"
    locon = "locon"  # LoRA on the ResNet convs too (conv_rank / conv_alpha); peft LoraConfig
    loha = "loha"  # LyCORIS LoHa (peft LoHaConfig)
    lokr = "lokr"  # LyCORIS LoKr (peft LoKrConfig)
    dora = "dora"  # weight-decomposed LoRA (peft LoraConfig(use_dora=True))
    oft = "oft"  # orthogonal fine-tuning (peft OFTConfig); sdft/diffusers-format file only, see docs/formats.md
    embedding = "embedding"  # textual inversion: only new prompt tokens' embeddings train (adapter.embedding)


class LossKind(str, Enum):
    l2 = "l2"
    l1 = "l1"
    huber = "huber"  # pseudo-Huber, as kohya's --loss_type huber
    smooth_l1 = "smooth_l1"


class HuberSchedule(str, Enum):
    constant = "constant"
    exponential = "exponential"
    snr = "snr"


class TimestepSampling(str, Enum):
    uniform = "uniform"
    logit_normal = "logit_normal"
    mode = "mode"


# `continue` is a Python keyword, so this enum is made with the functional API; members: StartMode["continue"].
StartMode = Enum("StartMode", {m: m for m in ("fresh", "continue", "stack", "merge")}, type=str)
StartMode.__doc__ = "How a phase starts from the previous phase's adapter (sdft/adapters/lora.py start_phase)."


class OnBadImages(str, Enum):
    error = "error"  # stop with the list of unreadable files
    skip = "skip"  # leave them out, with a warning


class MissingCaptions(str, Enum):
    warn = "warn"
    error = "error"


class DoctorMode(str, Enum):
    warn = "warn"  # the data doctor's cheap checks at start: severe findings are logged
    fatal = "fatal"  # ... and stop the run before the model loads
    off = "off"


class LoggerKind(str, Enum):
    csv = "csv"
    wandb = "wandb"
    tensorboard = "tensorboard"
    none = "none"


@dataclass
class ModelConfig:
    """Which base model to load and how to hold it."""

    # "tiny", "toy", a hub id (e.g. stable-diffusion-v1-5/stable-diffusion-v1-5), a local diffusers folder, or a single-file
    # checkpoint in the original (A1111/civitai) layout: .safetensors (.ckpt only with allow_pickle=true)
    path: str = MISSING
    config: Optional[str] = (
        None  # single files: diffusers folder / hub id of the architecture (default SD 1.5 / SDXL 1.0)
    )
    vae: Optional[str] = None  # other VAE: hub id, diffusers folder or single file (e.g. stabilityai/sd-vae-ft-mse)
    allow_pickle: bool = False  # load .ckpt/.pt/.bin pickle files (pickle can run code: only files you trust)
    # 1 = last CLIP layer (SD default), 2 = penultimate (A1111 "Clip skip"); training and sampling
    clip_skip: int = ranged(1, ge=1, why="1 = the last CLIP layer, 2 = the penultimate")
    revision: Optional[str] = None
    variant: Optional[str] = None  # e.g. "fp16" for hub repos that ship fp16 weight files
    local_files_only: bool = False  # never touch the network; also set by HF_HUB_OFFLINE=1
    cache_dir: Optional[str] = None  # where the tiny model is built (default: $SDFT_CACHE_DIR or ~/.cache/sdft)
    weight_dtype: WeightDtype = (
        WeightDtype.fp32
    )  # dtype of the frozen weights: fp32 | fp16 | bf16 (trained params stay fp32)
    prediction_type: Optional[PredictionType] = None  # override the scheduler's: epsilon | v_prediction
    gradient_checkpointing: bool = False
    attention: Attention = Attention.sdpa  # sdpa | xformers (CUDA only)
    channels_last: bool = False  # U-Net and VAE in channels_last memory layout (GPU speed-up with bf16/fp16)
    compile: bool = False  # torch.compile the U-Net (in place, after the adapters are set up; first steps compile)
    family: Optional[ModelFamily] = None  # sd1 | sd2 | sdxl; default: from the loaded pipeline (a mismatch is an error)
    # int8 | fp8 | nf4: the frozen U-Net / text encoder weights stored quantized (adapter training only;
    # sdft/models/quantize.py); null: as weight_dtype
    quantize: Optional[Quantize] = None


@dataclass
class ConceptConfig:
    """One subject (or one class/regularisation set) of a multi-concept dataset, like DreamBooth's concepts_list."""

    instance_dir: str = MISSING  # its images (kohya `<repeats>_<trigger> <class>` sub-folders are read too)
    instance_prompt: Optional[str] = None  # e.g. "photo of sks dog"; default: from the folder name
    class_prompt: Optional[str] = None  # e.g. "photo of a dog"; its class images get this prompt
    class_dir: Optional[str] = None  # existing class images, or where generated ones go
    repeats: Optional[int] = ranged(
        None,
        ge=1,
        why="0 leaves the concept out of every epoch; unset: the folder's `<repeats>_` prefix, else data.repeats",
    )
    loss_weight: float = ranged(1.0, ge=0)  # multiplies this concept's per-sample loss
    trigger: Optional[str] = None  # ensured in every caption; default: from the folder name / instance prompt
    is_reg: bool = False  # this entry is a class (regularisation) set, not a subject
    caption_extension: Optional[str] = None  # default: data.caption_extension
    keep_tokens: Optional[int] = ranged(None, ge=0, why="unset: data.keep_tokens")
    shuffle_caption: Optional[bool] = None  # default: data.shuffle_caption
    flip: Optional[bool] = None  # default: data.random_flip
    # this concept's training resolution (multi-resolution data)
    resolution: Optional[int] = ranged(None, ge=8, why="pixels, a multiple of 8; unset: data.resolution(s)")


@dataclass
class DataConfig:
    """Instance images, their prompts, and the class prompt for prior preservation (see docs/data.md)."""

    instance_dir: Optional[str] = None  # a folder of images, or of kohya `<repeats>_<trigger> <class>` folders
    instance_prompt: Optional[str] = None  # e.g. "photo of sks person"; used for images without a caption file
    class_prompt: Optional[str] = None  # e.g. "photo of a person"; required when prior preservation is on
    class_dir: Optional[str] = None  # default: datasets/class_images/<model>/<class prompt>
    trigger: Optional[str] = None  # e.g. "sks": prepended to captions that lack it (data.ensure_trigger)
    concepts: List[ConceptConfig] = field(default_factory=list)  # several subjects; replaces instance_dir/prompts
    kohya_toml: Optional[str] = None  # a kohya-ss dataset config ([general] / [[datasets]] / [[datasets.subsets]])
    recursive: bool = True  # also take images from sub-folders of instance_dir
    use_captions: bool = True  # read <image>.<caption_extension> when present
    caption_extension: str = ".txt"  # .txt or .caption (or any)
    # warn | error: when the caption extension matches no file but others exist
    missing_captions: MissingCaptions = MissingCaptions.warn
    ensure_trigger: bool = True  # prepend the concept's trigger word to captions that lack it
    shuffle_caption: bool = False  # shuffle comma-separated tags (after the first keep_tokens)
    keep_tokens: int = ranged(0, ge=0)  # tags kept in place at the start when shuffling
    # probability of training a sample on the empty prompt
    caption_dropout: float = ranged(0.0, ge=0, lt=1, why="a probability")
    # probability of leaving out each tag (after the first keep_tokens)
    caption_tag_dropout_rate: float = ranged(0.0, ge=0, lt=1, why="a probability")
    caption_variants: bool = False  # each line of a caption file is one caption; one is drawn per sample
    caption_wildcards: bool = False  # `{a|b|c}` in captions becomes one of a, b, c per sample
    # null: the base model's native size (its U-Net's sample size x the VAE factor: SD 1.x 512, SDXL 1024, tiny 64)
    resolution: Optional[int] = ranged(None, ge=8, why="pixels, a multiple of 8; unset: the base model's native size")
    # multi-resolution: every instance image (of concepts without their own resolution) trains at each of these, e.g.
    # [512, 768]; buckets and caches are per resolution, data.resolution stays the grids' size. []: data.resolution only
    resolutions: List[int] = ranged(factory=list, ge=8, why="pixels, multiples of 8")
    center_crop: bool = True  # False: random crop
    random_flip: bool = False
    enable_bucket: bool = False  # aspect-ratio buckets instead of square crops
    # null: half the native size (SD 1.x 256, SDXL 512)
    min_bucket_reso: Optional[int] = ranged(None, ge=8, why="pixels; unset: half the native size")
    # null: twice the native size (SD 1.x 1024, SDXL 2048)
    max_bucket_reso: Optional[int] = ranged(None, ge=8, why="pixels; unset: twice the native size")
    bucket_reso_steps: int = ranged(64, ge=8, why="pixels, a multiple of 8")
    bucket_no_upscale: bool = False  # images smaller than resolution^2 keep their size (rounded to the step)
    # instance images per batch; with prior preservation as many class images are added
    batch_size: int = ranged(1, ge=1, why="instance images per batch")
    # an epoch shows each instance image this many times
    repeats: int = ranged(1, ge=1, why="with 0 an epoch has no images and nothing is trained")
    num_workers: int = ranged(0, ge=0, why="data loader processes; 0 loads in the main process")
    # error: stop with the list of unreadable files | skip: leave them out, with a warning
    on_bad_images: OnBadImages = OnBadImages.error
    # transparency is composited on this
    background: List[int] = ranged(factory=lambda: [255, 255, 255], ge=0, le=255, why="an RGB colour")
    # null (auto): cached where exact and worth it (sdft/data/cache_policy.py); true: asked for; false: never
    cache_latents: Optional[bool] = None  # encode each image with the VAE once (memory, or disk with cache_to_disk)
    cache_to_disk: bool = False
    cache_dir: Optional[str] = None  # default: $SDFT_CACHE_DIR/latents or ~/.cache/sdft/latents
    cache_text_encoder_outputs: Optional[bool] = (
        None  # only used when the text encoder is frozen and captions are fixed
    )
    # hold out this share of the instance images (seeded): val/fixed_noise_loss uses them
    validation_split: float = ranged(0.0, ge=0, lt=1, why="a share of the instance images")
    mask_dir: Optional[str] = None  # loss masks by image stem (loss.masked_loss); else <stem>.mask.png, else alpha
    doctor: DoctorMode = DoctorMode.warn  # `sdft data doctor`'s cheap checks at start: warn | fatal | off


@dataclass
class EmbeddingConfig:
    """New prompt tokens whose input embeddings are trained (textual inversion; with a LoRA: pivotal tuning)."""

    # the new token, e.g. "<sks>": write it in captions and prompts; None: no embedding is trained. (Not called `token`:
    # config keys named like secrets are dropped from LoRA metadata, tests/test_secrets.py)
    placeholder: Optional[str] = None
    # true: the placeholder may be a word the tokenizer already has (DreamBooth's rare `sks`), which then means the
    # embedding in every prompt, A1111's and ComfyUI's included; false: such a placeholder (e.g. `dog`) is refused
    take_over_word: bool = False
    init_word: Optional[str] = (
        None  # every vector starts as this word's embedding; default: the class prompt's last word
    )
    # vectors per token (<sks>, <sks>_1, ... as diffusers names them); the prompt writes <sks> only
    num_vectors: int = ranged(1, ge=1)
    # pivotal tuning: the embedding is frozen after this share of trainer.max_steps
    train_fraction: float = ranged(1.0, gt=0, le=1, why="the share of trainer.max_steps the embedding trains")


@dataclass
class AdapterConfig:
    """What is trained: LoRA on named target groups, or the full U-Net (DreamBooth)."""

    kind: AdapterKind = AdapterKind.lora
    rank: int = ranged(4, ge=1, why="typical: 4 to 64")
    # LoRA scale = alpha / rank; default alpha = rank
    alpha: Optional[float] = ranged(None, gt=0, why="or unset: alpha = rank")
    dropout: float = ranged(0.0, ge=0, lt=1, why="a probability; typical 0 to 0.1")
    train_unet: bool = True
    train_text_encoder: bool = True
    unet_targets: List[str] = field(default_factory=lambda: ["attn1", "attn2"])  # see sdft/adapters/targets.py
    text_encoder_targets: List[str] = field(default_factory=lambda: ["attn"])
    # rank on 3x3 convs (target group `conv`); default: rank
    conv_rank: Optional[int] = ranged(None, ge=1, why="or unset: conv_rank = rank")
    # alpha on 3x3 convs; default: conv_rank
    conv_alpha: Optional[float] = ranged(None, gt=0, why="or unset: conv_alpha = conv_rank")
    # kind=oft: size of the orthogonal blocks (must divide every target's input features)
    oft_block_size: int = ranged(32, ge=1, why="it must divide every target's input features, e.g. 32")
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)  # kind=embedding, or a peft kind (pivotal)


PHASE_SECTIONS = ("data", "adapter", "prior", "optim", "loss", "trainer", "callbacks", "ema")


@dataclass
class PhaseConfig:
    """One training phase; its name is the output sub-folder (and the name its frozen adapter gets when stacked)."""

    name: str = "main"
    # fresh | continue (the previous adapter) | stack (freeze it, new one on top) | merge (into base)
    start: StartMode = StartMode.fresh
    init_lora: Optional[str] = (
        None  # start from a saved LoRA file (ours or kohya/A1111), treated as the previous adapter
    )
    # per-phase values for the sections in PHASE_SECTIONS, merged onto the run's config (unknown keys fail), e.g.
    # {data: {instance_dir: datasets/x/face}, adapter: {unet_targets: [attn1, attn2]}, trainer: {max_steps: 300}}
    overrides: Dict[str, Any] = field(default_factory=dict)


@dataclass
class PriorConfig:
    """Prior preservation: class images in every batch, their loss weighted in."""

    enabled: bool = False
    loss_weight: float = ranged(1.0, ge=0)
    num_class_images: int = ranged(100, ge=1)
    generation_batch_size: int = ranged(4, ge=1)
    generation_steps: int = ranged(30, ge=1)
    generation_guidance: float = ranged(7.5, ge=0)
    negative_prompt: str = ""
    # the base model's own prediction as the prior (any peft adapter kind, no class images): sdft/training/prior_prediction.py
    base_prediction: bool = False
    base_prediction_weight: float = ranged(1.0, ge=0)
    base_prediction_prompt: Optional[str] = None  # default: data.class_prompt
    # per sample: its own caption with the trigger replaced by the class word (kohya-style captions) as the prompt
    base_prediction_captions: bool = False
    base_prediction_class_word: Optional[str] = None  # default: the class prompt's last word


@dataclass
class BlockLrConfig:
    """Per-block U-Net lr multipliers (kohya's down_lr_weight / mid_lr_weight / up_lr_weight), sdft/training/optimizers.py."""

    # one per down block (SD 1.x: 4) or per kohya IN block (12); []: 1
    down: List[float] = ranged(factory=list, ge=0, why="lr multipliers")
    mid: float = ranged(1.0, ge=0, why="an lr multiplier")
    # one per up block (4) or per kohya OUT block (12); []: 1
    up: List[float] = ranged(factory=list, ge=0, why="lr multipliers")


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule."""

    lr: float = ranged(1e-4, gt=0, why="0 leaves the untrained model")
    # default: lr
    text_encoder_lr: Optional[float] = ranged(
        None, ge=0, why="unset: optim.lr; to freeze the text encoder, set adapter.train_text_encoder=false"
    )
    # SDXL's second text tower (OpenCLIP bigG); default: text_encoder_lr
    text_encoder_2_lr: Optional[float] = ranged(
        None, ge=0, why="unset: optim.text_encoder_lr; to freeze both text towers, set adapter.train_text_encoder=false"
    )
    # trained token embeddings (adapter.embedding); default: lr
    embedding_lr: Optional[float] = ranged(None, gt=0, why="0 trains no embedding; unset: optim.lr")
    scheduler: str = "constant"  # any name diffusers.optimization.get_scheduler knows: constant, linear, cosine, ...
    warmup_steps: int = ranged(0, ge=0)
    # the optimizer class and its own arguments: {_target_: torch.optim.AdamW, _partial_: true, weight_decay: 0.01, ...}
    # (presets in conf/optim/; a missing package fails with its pip name). {}: AdamW as conf/optim/adamw.yaml sets it
    # (sdft/training/optimizers.py ADAMW_NODE); torch.optim.AdamW's `fused: null` means on when training on a GPU
    optimizer: Dict[str, Any] = field(default_factory=dict)
    # LoRA+: lr × ratio for the LoRA B (up) matrices, e.g. 16
    loraplus_ratio: Optional[float] = ranged(
        None, gt=0, why="LoRA+ multiplies the B matrices' lr by it; typical 16; unset: no LoRA+"
    )
    unet_block_lr: BlockLrConfig = field(default_factory=BlockLrConfig)


# the valid values of optimizer arguments many classes share, checked in optim.optimizer when present (each element,
# for a list: Adam's betas, CAME's eps pair) before anything loads
OPTIMIZER_ARG_RANGES = {
    "betas": Range(ge=0, lt=1, why="Adam's moment decays"),
    "eps": Range(gt=0),
    "weight_decay": Range(ge=0),
}

# keys that are gone -> what to write instead; given one, a run stops at start naming the new key (sdft/run/checks.py)
MOVED_KEYS = {
    "optim.name": "the optimizer's preset, optim=adamw8bit (conf/optim/), or optim.optimizer._target_",
    "optim.betas": "optim.optimizer.betas",
    "optim.eps": "optim.optimizer.eps",
    "optim.weight_decay": "optim.optimizer.weight_decay",
    "optim.fused": "optim.optimizer.fused",
}


def without_moved_keys(saved: dict) -> dict:
    """A run's saved config (a plain dict) without the MOVED_KEYS it may hold from before they moved, for reading a
    finished run on today's schema (what it trained with stays in its config.yaml)."""
    out = {**saved}
    for key in MOVED_KEYS:
        section, _, name = key.partition(".")
        if isinstance(out.get(section), dict) and name in out[section]:
            out[section] = {k: v for k, v in out[section].items() if k != name}
    return out


@dataclass
class LossConfig:
    """Diffusion loss options."""

    # e.g. 5.0 (Hang et al. 2023); None = plain MSE
    min_snr_gamma: Optional[float] = ranged(None, gt=0, why="typical 5; unset: no min-SNR weighting")
    noise_offset: float = ranged(0.0, ge=0, why="typical 0.05")  # e.g. 0.05; adds per-channel offset noise
    # check the loss for NaN/inf every N steps. 1: every step, so a bad step never updates the weights (one host-device
    # sync per step); N > 1: no per-step sync on GPUs, a bad step is caught at the next check (saves refuse bad weights)
    finite_check_every_n_steps: int = ranged(1, ge=1)
    # the rest: sdft/training/losses.py and sdft/training/noise.py, docs/techniques.md (kohya sd-scripts' names where it has them)
    kind: LossKind = LossKind.l2  # l2 | l1 | huber | smooth_l1
    huber_c: float = ranged(0.1, gt=0)  # huber / smooth_l1 threshold
    huber_schedule: HuberSchedule = HuberSchedule.snr  # constant | exponential | snr (as kohya's --huber_schedule)
    debiased_estimation: bool = False  # weight each sample by 1/sqrt(SNR) (1/(SNR+1) for v-prediction)
    zero_terminal_snr: bool = False  # rescale betas to zero terminal SNR; needs model.prediction_type=v_prediction
    # multi-resolution noise levels (kohya multires_noise_iterations, e.g. 6)
    pyramid_noise_iterations: int = ranged(0, ge=0)
    pyramid_noise_discount: float = ranged(0.3, ge=0, le=1)  # each coarser level's weight multiplies by this
    # e.g. 0.1: the U-Net's input noise gets extra noise, the target does not
    input_perturbation: float = ranged(0.0, ge=0, why="typical 0.1")
    min_timestep: int = ranged(0, ge=0)  # timesteps are drawn from [min_timestep, max_timestep)
    max_timestep: Optional[int] = ranged(None, ge=1, why="unset: the scheduler's num_train_timesteps")
    timestep_sampling: TimestepSampling = TimestepSampling.uniform  # uniform | logit_normal | mode (SD3)
    logit_mean: float = ranged(0.0)  # logit_normal
    logit_std: float = ranged(1.0, gt=0)  # logit_normal
    mode_scale: float = ranged(1.29)  # mode
    masked_loss: bool = False  # weight the loss by per-image masks (data.mask_dir, <stem>.mask.png, or alpha)
    # the loss weight outside the mask (0: the background is ignored)
    unmasked_weight: float = ranged(0.0, ge=0, le=1, why="the loss weight outside the mask")


@dataclass
class EmaConfig:
    """An exponential moving average of the trained weights (diffusers' EMAModel), sdft/training/ema.py."""

    enabled: bool = False
    # the most it reaches; before that (1+n)/(10+n) at n steps after start_step (diffusers)
    decay: float = ranged(0.999, ge=0, lt=1)
    start_step: int = ranged(0, ge=0)  # the average equals the weights until this step, then averages
    warmup: bool = False  # diffusers' use_ema_warmup: decay 1-(1+n)^-power instead of (1+n)/(10+n)
    power: float = ranged(0.6666666666666666, gt=0)  # warmup's power (2/3; 3/4 for long runs)
    device: str = "same"  # same: beside the weights | cpu: in CPU memory (saves GPU memory, copies every step)
    save_ema_weights: bool = True  # LoRA files and the phase's end weights from the average; false: raw, + lora_ema/


@dataclass
class TrainerConfig:
    """Passed to lightning.Trainer as keyword arguments."""

    max_steps: int = ranged(400, ge=1)
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = ranged(1, ge=1)
    strategy: str = "auto"
    precision: str = "32-true"  # e.g. bf16-mixed, 16-mixed
    accumulate_grad_batches: int = ranged(1, ge=1, why="batches per optimizer step")
    gradient_clip_val: Optional[float] = ranged(1.0, ge=0, why="or null: no clipping")
    log_every_n_steps: int = ranged(10, ge=1)
    enable_progress_bar: bool = True
    deterministic: bool = False


@dataclass
class LoggerConfig:
    """Experiment tracking: csv | wandb | tensorboard | none."""

    kind: LoggerKind = LoggerKind.csv
    project: str = "sdft"
    entity: Optional[str] = None
    run_name: Optional[str] = None  # default: the run's name
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    offline: bool = True  # wandb: set false (and WANDB_API_KEY in the environment) to upload live
    log_lora: bool = False  # wandb: also log the final LoRA folder (both formats) as an artifact of type "lora"


class LikenessMetric(str, Enum):
    auto = "auto"  # toy for model=toy; face when faces are found in most training images; else image
    face = "face"  # dlib face identity (pip install -e ".[faces]")
    image = "image"  # DINO similarity (and CLIP-I/CLIP-T) with eval.dino_model / eval.clip_model
    toy = "toy"  # the toy world's detector: all-attribute fidelity


@dataclass
class LikenessConfig:
    """The likeness meter: samples scored against the subject at each checkpoint, a recommended checkpoint
    (docs/eval.md, "Likeness while training")."""

    enabled: bool = True  # measures whenever a step checkpoint is saved (checkpoint_every_n_steps > 0) and at the end
    metric: LikenessMetric = LikenessMetric.auto
    # samples of the instance and the class prompt
    seeds: List[int] = ranged(factory=lambda: [0, 1, 2, 3], ge=0, lt=2**32, why="seeds")
    flex_seeds: List[int] = ranged(factory=lambda: [0], ge=0, lt=2**32, why="seeds")  # samples of each varied prompt
    flex_prompts: List[str] = field(default_factory=list)  # {identifier} {cls}; default: a set per class word
    num_flex_prompts: int = ranged(2, ge=0, why="prompts of the default set")
    # samples per pipeline call (all 10 of the defaults in one; lower it on a small GPU / CPU)
    batch_size: int = ranged(10, ge=1, why="samples per pipeline call")
    # a step checkpoint is skipped when measuring it would take the meter over this share of the training time so far
    # (the first one's cost estimated from the training step's time; the final checkpoint is always measured);
    # 0: measure every checkpoint
    max_share: float = ranged(0.1, ge=0, why="a share of the training time; 0: measure every checkpoint")
    # recommended: the earliest checkpoint within this of the best likeness (same scale)
    tolerance: float = ranged(0.1, ge=0, why="likeness difference")
    max_leakage_ratio: float = ranged(0.5, ge=0, why="times its likeness")  # ... whose leakage is at most this
    min_flex_ratio: float = ranged(0.5, ge=0, why="times its likeness")  # ... and whose flexibility at least this


@dataclass
class ProgressConfig:
    """Terminal progress (sdft/callbacks/progress.py): one bar for the whole run, or plain lines off a terminal."""

    # stdout not a terminal: one log line every N optimizer steps (and the last); 0: none
    every_n_steps: int = ranged(10, ge=0, why="optimizer steps between log lines; 0: none")


@dataclass
class CallbacksConfig:
    """LoRA checkpoints and validation grids."""

    checkpoint_every_n_steps: int = ranged(0, ge=0, why="0: only the final save")  # 0: only the final save
    keep_last_k: int = ranged(3, ge=1, why="fewer would delete every checkpoint, resumable state included")
    kohya_fp16: bool = False  # the kohya/A1111 LoRA file in fp16 (half the size); the diffusers file stays fp32
    validation_every_n_steps: int = ranged(0, ge=0, why="0: only at the end")  # 0: only at the end
    validation_prompts: List[str] = field(default_factory=list)  # default: instance and class prompt
    validation_seeds: List[int] = ranged(factory=lambda: [0, 1], ge=0, lt=2**32, why="seeds")
    validation_steps: int = ranged(20, ge=1)
    validation_guidance: float = ranged(7.5, ge=0)
    validation_negative_prompt: str = ""
    validation_resolution: Optional[int] = ranged(None, ge=8, why="pixels, a multiple of 8; unset: data.resolution")
    validation_at_start: bool = False  # also render the untrained model, for a before/after comparison
    fixed_noise_loss: bool = True  # log val/fixed_noise_loss (instance images, fixed noise/timesteps): comparable
    progress: ProgressConfig = field(default_factory=ProgressConfig)
    likeness: LikenessConfig = field(default_factory=LikenessConfig)  # the likeness meter (sdft/callbacks/likeness.py)


@dataclass
class EvalConfig:
    """`sdft eval` and the compare report: what is generated and which feature models score it (docs/eval.md)."""

    label: Optional[str] = None  # the run's name in reports (default: the run name, or the phase name)
    prompts: str = (
        "live"  # DreamBooth's 25 prompts: live | object; or a text file, one prompt a line ({identifier} {cls})
    )
    num_prompts: Optional[int] = ranged(None, ge=1, why="unset: all")  # spread over the list (keeps all three kinds)
    # images per prompt: one per seed
    seeds: List[int] = ranged(factory=lambda: [0, 1, 2, 3], ge=0, lt=2**32, why="seeds")
    class_images: int = ranged(8, ge=1)  # class-prompt generations (seeds 0..N-1) for PRES and DIV
    steps: int = ranged(25, ge=1)
    guidance: float = ranged(7.5, ge=0)
    scheduler: str = "dpmpp_2m_karras"  # any name of sdft generate --scheduler
    resolution: Optional[int] = ranged(None, ge=8, why="pixels, a multiple of 8; unset: data.resolution")
    identifier: Optional[str] = (
        None  # default: data.trigger, else the instance prompt's word absent from the class prompt
    )
    class_noun: Optional[str] = None  # default: the class prompt's last word
    clip_model: str = (
        "auto"  # hub id or folder (CLIP-I, CLIP-T); tiny: offline random; auto: tiny for model=tiny, else B/32
    )
    dino_model: str = "auto"  # hub id or folder (DINO, PRES, DIV); tiny: offline random; auto: tiny, else dino-vits16
    # class prompts for language drift (the class prompt + eval prompts without the identifier)
    drift_prompts: int = ranged(8, ge=1)
    timing_images: int = ranged(2, ge=1)  # images timed per inference setting (after one warm-up image)
    grid_prompts: int = ranged(4, ge=1)  # prompts (rows) in the compare report's side-by-side grid
    device: Optional[str] = None  # default: cuda when available


@dataclass
class CardConfig:
    """The model card written beside the trained files (sdft/adapters/model_card.py)."""

    # the card's license field; null: the base family's (SD 1.x creativeml-openrail-m, SD 2.x / SDXL openrail++)
    license: Optional[str] = None


@dataclass
class SdftConfig:
    """The whole run."""

    name: str = "sdft"
    seed: int = ranged(42, ge=0, lt=2**32, why="Lightning's seed_everything range")
    output_dir: Optional[str] = None  # default: Hydra's run directory
    resume: Optional[str] = None  # auto: continue the newest unfinished run of this name; or a run folder
    optimized_metric: Optional[str] = None  # train.py returns this final metric (Optuna sweeps: hparams_search=...)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    phase: PhaseConfig = field(default_factory=PhaseConfig)
    phases: List[PhaseConfig] = field(default_factory=list)  # several phases in order; empty: the single `phase`
    prior: PriorConfig = field(default_factory=PriorConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    card: CardConfig = field(default_factory=CardConfig)


def register_configs() -> None:
    """Register the schema that conf/config.yaml names first in its defaults list."""
    ConfigStore.instance().store(name="sdft_schema", node=SdftConfig)


register_configs()
