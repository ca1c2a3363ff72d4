"""`sdft lora extract --base B --tuned T OUT --rank R`: a LoRA from the weight difference of a fine-tuned model
(e.g. a full DreamBooth run) and its base, by SVD, as kohya's extract_lora_from_models.py does.

For every Linear / Conv2d layer whose weights differ, dW = W_tuned - W_base (convs flattened to [out, in*kh*kw])
is factored by SVD and truncated to rank R (`conv_rank` for 3x3 convs; 0 skips them, as kohya's plain LoRA does):
lora_up = U_R sqrt(S_R), lora_down = sqrt(S_R) V_R^T. Every module gets alpha = R (scale alpha/rank = 1 where the
layer allows rank R; layers narrower than R keep their full rank with the scale folded into lora_up, so all
modules carry one alpha: diffusers 0.42 drops differing per-module alphas on attention layers).
The text encoder is included when any of its layers differ by more than `min_diff` (relative Frobenius norm).
Biases, norms and embeddings are not LoRA-able: their changes are reported, not extracted.

`--tuned` may also be an adapter file of any kind (LoRA, LoCon, DoRA, LoHa, LoKr, OFT's sdft file) or an adapter
run folder: the base with that adapter merged (`sdft export`'s merge) is the tuned model, so a LyCORIS adapter
becomes a plain LoRA/LoCon of rank R (exact at full rank). OFT's kohya `.diff` file is refused (sdft does not read
it; give the run's pytorch_lora_weights.safetensors).

Output: kohya format with ss_* metadata; loads with diffusers' `load_lora_weights`, A1111, ComfyUI.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from sdft.errors import ConfigError

log = logging.getLogger(__name__)

MIN_DIFF = 1e-6  # relative ||dW|| / ||W_base|| below which a layer counts as unchanged


@dataclass
class ExtractReport:
    retained: dict[str, float] = field(default_factory=dict)  # module -> ||dW_R|| / ||dW||
    norms: dict[str, float] = field(default_factory=dict)  # module -> ||dW||
    ranks: dict[str, int] = field(default_factory=dict)
    not_extracted: list[str] = field(default_factory=list)  # changed parameters a LoRA cannot hold
    text_encoder: bool = False

    @property
    def overall(self) -> float:
        total = sum(n**2 for n in self.norms.values())
        kept = sum((self.retained[k] * n) ** 2 for k, n in self.norms.items())
        return math.sqrt(kept / total) if total > 0 else 1.0

    def summary(self) -> str:
        te = "U-Net + text encoder" if self.text_encoder else "U-Net only (text encoder unchanged)"
        extra = (
            f"; {len(self.not_extracted)} changed non-LoRA parameters (biases/norms/embeddings) not extracted"
            if self.not_extracted
            else ""
        )
        return f"{len(self.norms)} modules, {te}; Frobenius norm of dW retained: overall {self.overall:.4f}{extra}"


def _layers(model):
    from torch import nn

    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


def _svd(delta, rank: int):
    """Best rank-`rank` factors of a 2-D delta: (down [k, in], up [out, k], retained fraction, k)."""
    import torch

    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    keep = min(rank, s.numel())
    energy = s.pow(2)
    total = float(energy.sum())
    root = s[:keep].sqrt()
    retained = math.sqrt(float(energy[:keep].sum()) / total) if total > 0 else 1.0
    return root[:, None] * vh[:keep], u[:, :keep] * root, retained, keep


def extract_model(
    base, tuned, kind: str, rank: int, conv_rank: int, min_diff: float, report: ExtractReport, device: str = "cpu"
):
    """peft-keyed LoRA state dict and alphas for one model pair (same architecture)."""
    import torch

    base_layers, tuned_layers = _layers(base), _layers(tuned)
    if base_layers.keys() != tuned_layers.keys():
        diff = sorted(set(base_layers) ^ set(tuned_layers))[:5]
        raise ConfigError(f"{kind}: base and tuned models have different layers (e.g. {diff}); same architecture?")
    sd, alphas = {}, {}
    for name, layer in tuned_layers.items():
        w_tuned = layer.weight.detach().to(device, torch.float64)
        w_base = base_layers[name].weight.detach().to(device, torch.float64)
        if w_tuned.shape != w_base.shape:
            raise ConfigError(f"{kind}.{name}: weight shapes differ {tuple(w_base.shape)} vs {tuple(w_tuned.shape)}")
        delta = w_tuned - w_base
        norm = float(delta.norm())
        if norm <= min_diff * max(float(w_base.norm()), 1e-12):
            continue
        is_3x3 = delta.ndim == 4 and delta.shape[2:] != (1, 1)
        r = conv_rank if is_3x3 else rank
        if r <= 0:
            report.not_extracted.append(f"{kind}.{name}.weight (conv rank 0)")
            continue
        down, up, retained, keep = _svd(delta.flatten(1), r)
        up = up * (keep / rank)  # alpha = rank for every module; a narrower layer's scale rank/keep is undone here
        if delta.ndim == 4:
            down = down.reshape(keep, *delta.shape[1:])
            up = up[:, :, None, None]
        sd[f"{name}.lora_A.weight"] = down.float().cpu().contiguous()
        sd[f"{name}.lora_B.weight"] = up.float().cpu().contiguous()
        alphas[f"{kind}.{name}"] = float(rank)
        report.retained[f"{kind}.{name}"], report.norms[f"{kind}.{name}"] = retained, norm
        report.ranks[f"{kind}.{name}"] = keep
    lora_params = {f"{n}.weight" for n in tuned_layers}
    base_params = dict(base.named_parameters())
    for pname, p in tuned.named_parameters():
        if pname not in lora_params and not torch.equal(p.detach().cpu(), base_params[pname].detach().cpu()):
            report.not_extracted.append(f"{kind}.{pname}")
    return sd, alphas


def extract_lora(
    base_pipe,
    tuned_pipe,
    rank: int,
    conv_rank: int | None = None,
    min_diff: float = MIN_DIFF,
    text_encoder: bool | None = None,
    device: str = "cpu",
):
    """(unet_sd, te_sd, alphas, report) from two pipelines; text_encoder=None: only if it differs."""
    conv_rank = rank if conv_rank is None else conv_rank
    if rank < 1 or conv_rank < 0:
        raise ConfigError(f"rank must be >= 1 and conv rank >= 0 (got {rank}, {conv_rank})")
    report = ExtractReport()
    unet_sd, unet_alphas = extract_model(
        base_pipe.unet, tuned_pipe.unet, "unet", rank, conv_rank, min_diff, report, device
    )
    te_sd, te_alphas = {}, {}
    if text_encoder is not False:
        te_sd, te_alphas = extract_model(
            base_pipe.text_encoder, tuned_pipe.text_encoder, "text_encoder", rank, conv_rank, min_diff, report, device
        )
    report.text_encoder = bool(te_sd)
    if not unet_sd and not te_sd:
        raise ConfigError("The tuned model's Linear/Conv2d weights equal the base's: nothing to extract.")
    return unet_sd, te_sd, {**unet_alphas, **te_alphas}, report


ADAPTER_KEY = ("lora_unet_", "lora_te_", "unet.", "text_encoder.")  # keys of adapter files (kohya or sdft/diffusers)


def adapter_file(tuned: str) -> Path | None:
    """The adapter file `tuned` names (a LoRA-style .safetensors, or a run / lora folder holding one), else None
    (a model: a diffusers folder, a full-DreamBooth run, a single-file checkpoint). A damaged .safetensors file is
    one LoraFormatError naming it."""
    from sdft.adapters.lora_file import open_safetensors
    from sdft.adapters.export import resolve_lora

    path = Path(tuned).expanduser()
    if path.is_dir():
        if (
            (path / "model_index.json").is_file()
            or list(path.glob("model/model_index.json"))
            or list(path.glob("*/model/model_index.json"))
        ):
            return None
        try:
            path = resolve_lora(str(path))
        except ConfigError:
            return None
    if not (path.is_file() and path.suffix == ".safetensors"):
        return None
    fix = "Give --tuned a LoRA/adapter file a training run wrote, an adapter run folder, or a fine-tuned model."
    with open_safetensors(path, "--tuned", fix) as f:
        keys = list(f.keys())
    return path if keys and all(k.startswith(ADAPTER_KEY) for k in keys) else None


def extract_file(
    base: str,
    tuned: str,
    out: str | os.PathLike,
    rank: int,
    conv_rank: int | None = None,
    config: str | None = None,
    min_diff: float = MIN_DIFF,
    fp16: bool = False,
    device: str = "cpu",
    allow_pickle: bool = False,
) -> ExtractReport:
    """Load base and tuned (anything model.path accepts, run folders too), extract, write a kohya file."""
    import torch

    from sdft.adapters.kohya import kohya_metadata, to_kohya, write_kohya_file
    from sdft.adapters.lora_file import read_lora_file
    from sdft.adapters.export import load_base, merge_loras

    lora = adapter_file(tuned)  # a damaged or NaN adapter fails now, before the models load
    if lora:
        read_lora_file(lora)
    base_pipe = load_base(base, config=config, allow_pickle=allow_pickle)
    tuned_pipe = load_base(base if lora else tuned, config=config, allow_pickle=allow_pickle)
    if lora:  # any adapter kind: merged into the base as `sdft export` does (OFT's `.diff` file refused there)
        merge_loras(tuned_pipe, [(lora, 1.0)])
    unet_sd, te_sd, alphas, report = extract_lora(base_pipe, tuned_pipe, rank, conv_rank, min_diff, device=device)
    tensors = to_kohya(unet_sd, te_sd, float(rank), float(rank), torch.float16 if fp16 else torch.float32, alphas)
    meta = kohya_metadata(  # ss_network_dim/alpha/args: write_kohya_file reads them off the tensors
        base_model=base,
        training_comment=f"extracted by sdft from {Path(str(tuned)).name} - {Path(str(base)).name}, rank {rank}; "
        f"Frobenius norm of dW retained {report.overall:.4f}",
    )
    write_kohya_file(tensors, out, meta)
    return report
