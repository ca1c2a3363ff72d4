"""What to evaluate: a model (base or fine-tuned folder) plus LoRA files, read from a finished run's folder.

A run's phases are replayed: a full DreamBooth phase replaces the base by its `model/` folder; a LoRA phase adds its
file (`fresh` / `continue`: this file alone on the current base; `stack` / `merge`: on top of the previous ones —
a merged LoRA applied as a file computes the same). Each target also keeps the phases whose training it holds, for
the cost columns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sdft.errors import ConfigError


@dataclass
class Target:
    label: str
    model: str  # what Generator loads: the base (model.path) or a full fine-tune's model/ folder
    loras: list[str] = field(default_factory=list)  # LoRA files applied at weight 1
    base_model: str | None = None  # the run's original base (the language-drift reference)
    kind: str = "base"  # base | lora (or its LyCORIS kind: locon, loha...) | full | full+lora | embedding | pivotal
    phases: list[dict] = field(default_factory=list)  # summaries of the phases trained into it
    configs: list[DictConfig] = field(default_factory=list)  # their configs (batch sizes etc. for img/s)
    run_dir: Path | None = None
    embeddings: list[str] = field(default_factory=list)  # textual-inversion files (a pivotal LoRA brings its own)


def _load_yaml(path: Path) -> DictConfig:
    return OmegaConf.load(path)


def read_run(run_dir: str | Path) -> tuple[DictConfig, list[dict]]:
    """The run's config and its phase summaries; clear errors for a folder that is not a finished run."""
    run = Path(run_dir).expanduser()
    if not run.is_dir():
        raise ConfigError(f"{run_dir}: no such run folder (pass the output folder of `python train.py ...`).")
    summary_path, config_path = run / "summary.json", run / "config.yaml"
    if not config_path.is_file():
        raise ConfigError(f"{run}: not an sdft run folder (no config.yaml).")
    if not summary_path.is_file():
        raise ConfigError(f"{run}: no summary.json: the run has not finished (or failed); evaluate a finished run.")
    summary = json.loads(summary_path.read_text())
    return _load_yaml(config_path), summary.get("phases", [summary])


def run_targets(run_dir: str | Path, phase: str | None = None, all_phases: bool = False) -> list[Target]:
    """The targets of a run: its last phase (default), the named phase, or every phase."""
    run = Path(run_dir).expanduser()
    cfg, summaries = read_run(run)
    base_model = cfg.model.path
    model, loras, base_phases, chain = base_model, [], [], []
    targets: list[Target] = []
    for s in summaries:
        phase_cfg_path = run / s["phase"] / "config.yaml"
        phase_cfg = _load_yaml(phase_cfg_path) if phase_cfg_path.is_file() else cfg
        output = s.get("output")
        if not output or not Path(output).exists():
            raise ConfigError(f"{run}: phase {s['phase']!r} has no saved output ({output}); was it interrupted?")
        start = s.get("start", "fresh")
        embeddings = []
        if s["adapter"] == "embedding":  # textual inversion: the base plus the embedding file
            loras, embeddings, chain = [], [output], base_phases + [(s, phase_cfg)]
        elif s["adapter"] == "full":
            model, loras = output, []
            base_phases = chain = base_phases + [(s, phase_cfg)]
        else:
            if start in ("stack", "merge"):
                init = OmegaConf.select(phase_cfg, "phase.init_lora")
                loras = (loras or ([init] if init else [])) + [output]
                chain = chain + [(s, phase_cfg)]
            elif start == "continue":
                loras, chain = [output], chain + [(s, phase_cfg)]
            else:
                loras, chain = [output], base_phases + [(s, phase_cfg)]
        kind = "full+lora" if loras and model != base_model else ("lora" if loras else "full")
        if kind == "lora" and s["adapter"] in ("locon", "loha", "lokr", "dora", "oft"):  # the LyCORIS kind itself
            kind = s["adapter"]
        if s.get("embedding"):  # sdft.embeddings: textual inversion alone, or with a LoRA (pivotal tuning)
            kind = "pivotal" if loras else "embedding"
        label = s["phase"] if len(summaries) > 1 else (cfg.get("eval", {}).get("label") or cfg.name)
        targets.append(
            Target(
                label,
                model,
                list(loras),
                base_model,
                kind,
                [c[0] for c in chain],
                [c[1] for c in chain],
                run,
                embeddings,
            )
        )
    if phase is not None:
        chosen = [t for t, s in zip(targets, summaries) if s["phase"] == phase]
        if not chosen:
            raise ConfigError(f"{run}: no phase {phase!r}; phases: {[s['phase'] for s in summaries]}.")
        return chosen
    return targets if all_phases else targets[-1:]


def base_target(model: str, label: str = "base") -> Target:
    """The untouched base model (its drift is 0 by definition; the reference row of a report)."""
    return Target(label, model, [], model, "base")
