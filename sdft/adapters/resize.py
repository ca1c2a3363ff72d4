"""`sdft lora resize IN OUT --rank R`: a LoRA at a lower rank by SVD, as kohya's resize_lora.py does.

Per module the scaled update dW = (alpha / r) * up @ down (convs flattened to [out, in*kh*kw]) is factored by SVD
and truncated to the new rank R; the new alpha is scale * R, so alpha / rank (the scale every loader applies)
is unchanged and up' @ down' * alpha' / R is the best rank-R approximation of dW. The singular values are split
evenly between up and down (sqrt(S) each), which keeps both factors at the same magnitude for further training.
Modules already at rank <= R are copied unchanged (exactly). The retained Frobenius-norm fraction
||dW_R|| / ||dW|| is reported per module and overall (sqrt of the summed squared norms).

With `fro_target` (kohya's `sv_fro`) each module gets the smallest rank <= R that keeps at least that fraction.

Output: kohya format (`lora_unet_*` / `lora_te_*`, `.lora_down/.lora_up/.alpha`), the input's ss_* metadata
kept, ss_network_dim / ss_network_alpha read off the new tensors (the most common rank / alpha) and the resize noted
in ss_training_comment.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field

from sdft.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class ModuleReport:
    name: str  # "unet.<module>" / "text_encoder.<module>"
    old_rank: int
    new_rank: int
    retained: float  # ||dW_new||_F / ||dW||_F
    norm: float  # ||dW||_F (scaled)


@dataclass
class ResizeReport:
    modules: list[ModuleReport] = field(default_factory=list)

    @property
    def overall(self) -> float:
        """Retained Frobenius norm of all updates together: sqrt(sum retained^2 norm^2 / sum norm^2)."""
        total = sum(m.norm**2 for m in self.modules)
        kept = sum((m.retained * m.norm) ** 2 for m in self.modules)
        return math.sqrt(kept / total) if total > 0 else 1.0

    @property
    def min_retained(self) -> float:
        return min((m.retained for m in self.modules), default=1.0)

    def summary(self) -> str:
        ranks = Counter(m.new_rank for m in self.modules)
        return (
            f"{len(self.modules)} modules, new ranks {dict(sorted(ranks.items()))}; Frobenius norm retained: "
            f"overall {self.overall:.4f}, lowest module {self.min_retained:.4f}"
        )


def low_rank_factors(down, up, rank: int, fro_target: float | None = None):
    """SVD of up @ down (both 2-D, rank r each) truncated to `rank`: (new_down, new_up, retained, norm, new_rank).

    Computed through QR of the thin factors (r x r SVD), exact for the product and cheap for SD-size layers.
    """
    import torch

    qu, ru = torch.linalg.qr(up.double())  # up [out, r] = Qu Ru
    qd, rd = torch.linalg.qr(down.double().T)  # down^T [in, r] = Qd Rd
    u, s, vh = torch.linalg.svd(ru @ rd.T)  # up @ down = Qu (Ru Rd^T) Qd^T
    energy = s.pow(2)
    total = float(energy.sum())
    keep = min(rank, s.numel())
    if fro_target is not None and total > 0:
        cumulative = torch.cumsum(energy, 0) / total
        needed = int(torch.searchsorted(cumulative, torch.tensor(fro_target**2, dtype=cumulative.dtype)).item()) + 1
        keep = max(1, min(keep, needed))
    root = s[:keep].sqrt()
    new_up = (qu @ u[:, :keep]) * root
    new_down = root[:, None] * (vh[:keep] @ qd.T)
    retained = math.sqrt(float(energy[:keep].sum()) / total) if total > 0 else 1.0
    return new_down, new_up, retained, math.sqrt(total), keep


def resize_state(unet_sd, te_sd, alphas, rank: int, fro_target: float | None = None):
    """peft-keyed LoRA state dicts + per-module alphas -> the same at rank <= `rank`, and a ResizeReport."""
    from sdft.adapters.kohya import PEFT_KEY

    if rank < 1:
        raise ConfigError(f"rank must be >= 1, got {rank}")
    if fro_target is not None and not 0 < fro_target <= 1:
        raise ConfigError(f"fro_target must be in (0, 1], got {fro_target}")
    report = ResizeReport()
    new_alphas: dict[str, float] = {}
    out: dict[str, dict] = {}
    for kind, sd in (("unet", unet_sd or {}), ("text_encoder", te_sd or {})):
        out[kind] = {}
        pairs: dict[str, dict] = {}
        for key, value in sd.items():
            match = PEFT_KEY.fullmatch(key)
            if match is None:
                raise ConfigError(f"{kind}.{key}: not a LoRA down/up weight")
            pairs.setdefault(match["module"], {})[match["part"]] = value
        for module, pair in sorted(pairs.items()):
            down, up = pair["A"], pair["B"]
            r = down.shape[0]
            alpha = alphas.get(f"{kind}.{module}", float(r))
            scale = alpha / r
            if r <= rank and fro_target is None:  # nothing to cut: copy exactly
                out[kind][f"{module}.lora_A.weight"], out[kind][f"{module}.lora_B.weight"] = down, up
                new_alphas[f"{kind}.{module}"] = alpha
                norm = float((up.flatten(1).double() @ down.flatten(1).double()).norm()) * abs(scale)
                report.modules.append(ModuleReport(f"{kind}.{module}", r, r, 1.0, norm))
                continue
            new_down, new_up, retained, norm, keep = low_rank_factors(down.flatten(1), up.flatten(1), rank, fro_target)
            new_down = new_down.reshape(keep, *down.shape[1:]).to(down.dtype)
            new_up = new_up.reshape(up.shape[0], keep, *up.shape[2:]).to(up.dtype)
            out[kind][f"{module}.lora_A.weight"] = new_down.contiguous()
            out[kind][f"{module}.lora_B.weight"] = new_up.contiguous()
            new_alphas[f"{kind}.{module}"] = scale * keep  # alpha / rank stays `scale`
            report.modules.append(ModuleReport(f"{kind}.{module}", r, keep, retained, norm * abs(scale)))
    return out["unet"], out["text_encoder"], new_alphas, report


def uniform_alpha(unet_sd, te_sd, alphas, alpha: float | None = None):
    """Give every module the same alpha, folding the difference into lora_up (the product is unchanged).

    diffusers 0.42's kohya loader drops per-module alphas of attention layers (to_q/k/v/out) when they differ from
    the file's most common alpha (it builds their alpha_pattern keys wrongly); a file with one alpha for all
    modules loads exactly everywhere (A1111, ComfyUI, kohya, diffusers).
    """
    from sdft.adapters.kohya import PEFT_KEY

    if alpha is None:
        alpha = Counter(alphas.values()).most_common(1)[0][0] if alphas else 1.0
    new_alphas: dict[str, float] = {}
    out = []
    for kind, sd in (("unet", unet_sd or {}), ("text_encoder", te_sd or {})):
        state = dict(sd)
        for key, down in sd.items():
            match = PEFT_KEY.fullmatch(key)
            if match is None or match["part"] != "A":
                continue
            module = match["module"]
            old = alphas.get(f"{kind}.{module}", float(down.shape[0]))
            if old != alpha:
                up_key = f"{module}.lora_B.weight"
                state[up_key] = (state[up_key].double() * (old / alpha)).to(state[up_key].dtype).contiguous()
            new_alphas[f"{kind}.{module}"] = float(alpha)
        out.append(state)
    return out[0], out[1], new_alphas


def resize_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    rank: int,
    fro_target: float | None = None,
    fp16: bool | None = None,
) -> ResizeReport:
    """Read a kohya or diffusers LoRA file, resize it, write kohya format. fp16=None keeps the input's dtype."""
    import torch

    from sdft.adapters.kohya import kohya_metadata, load_kohya_lora, to_kohya, write_kohya_file
    from sdft.adapters.lora_file import read_lora_file
    from sdft.adapters.lycoris import file_kind

    state, metadata = read_lora_file(src)
    weights = [k for k in state if k.endswith(("lora_down.weight", "lora_A.weight", "lora.down.weight"))]
    in_dtype = state[weights[0]].dtype if weights else torch.float32
    kind = file_kind(list(state))
    if kind is not None:  # SVD of up @ down is LoRA's maths; DoRA's scale would no longer match the new direction
        raise ConfigError(f"sdft lora resize: {src} is a {kind} file; resize handles LoRA and LoCon files only.")
    unet_sd, te_sd, alphas = load_kohya_lora(src)
    old_ranks = sorted({v.shape[0] for sd in (unet_sd, te_sd) for k, v in sd.items() if ".lora_A." in k})
    unet_sd, te_sd, new_alphas, report = resize_state(unet_sd, te_sd, alphas, rank, fro_target)
    if len(set(new_alphas.values())) > 1:
        unet_sd, te_sd, new_alphas = uniform_alpha(unet_sd, te_sd, new_alphas)
    dtype = in_dtype if fp16 is None else (torch.float16 if fp16 else torch.float32)
    if not dtype.is_floating_point:
        dtype = torch.float32
    tensors = to_kohya(unet_sd, te_sd, 1.0, 1.0, dtype, alphas=new_alphas)
    if not any(k.startswith("ss_") for k in metadata):
        metadata = kohya_metadata(base_model=metadata.get("ss_sd_model_name", "unknown"))
    metadata.pop("lora_adapter_metadata", None)  # diffusers' peft config: wrong for a kohya file of another rank
    note = f"dimension is resized from {'/'.join(map(str, old_ranks))} to {rank}"
    if fro_target is not None:
        note += f" (sv_fro {fro_target})"
    note += f"; Frobenius norm retained {report.overall:.4f}"
    comment = metadata.get("ss_training_comment", "")
    metadata["ss_training_comment"] = f"{comment}; {note}" if comment else note
    write_kohya_file(tensors, dst, metadata)
    return report
