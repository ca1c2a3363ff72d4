"""A1111's prompt syntax for LoRAs: `<lora:name:weight>` / `<lora:name>` (and `<lyco:...>`, its alias there).

The tags are taken out of the prompt (they never reach the text encoder) and become LoRAs after the listed ones,
each name looked up in the LoRA folder as A1111 does (sdft/generation/lora_scan.py: the file stem, then the
`ss_output_name` alias). The infotext writes the active LoRAs back as such tags, so a pasted infotext reproduces the
setup. A1111's parser (modules/extra_networks.py) is a one-line regular expression; no library offers it.
"""

from __future__ import annotations

import difflib
import logging
import re
from dataclasses import replace
from pathlib import Path

from sdft.errors import ConfigError
from sdft.generation.params import GenerationParams, LoraSpec

log = logging.getLogger(__name__)
DEFAULT_LORA_DIR = "outputs"  # where `<lora:name>` is looked up unless --lora-dir / the UI's folder says otherwise
TAG = re.compile(r"\s*<(lora|lyco):([^>]+)>")  # A1111: <(\w+):([^>]+)>, for its LoRA network types


def _weight(text: str, tag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{tag}: {text!r} is not a number (write <lora:name:0.8>).") from None


def split_prompt_loras(prompt: str) -> tuple[str, list[tuple[str, float]]]:
    """(the prompt without its LoRA tags, [(name, weight)] in order). `<lora:name>` has weight 1; A1111's second
    number (a separate U-Net weight, or `unet=`) is accepted only when it equals the first."""
    found = []
    for match in TAG.finditer(prompt):
        tag = match.group(0).strip()
        name, *args = [a.strip() for a in match.group(2).split(":")]
        named = dict(a.split("=", 1) for a in args if "=" in a)
        positional = [a for a in args if "=" not in a]
        unknown = set(named) - {"te", "unet"}
        if not name or unknown:
            raise ConfigError(f"{tag}: expected <lora:name> or <lora:name:weight> (unknown {sorted(unknown)}).")
        weight = _weight(named.get("te", positional[0] if positional else "1"), tag)
        unet = named.get("unet", positional[1] if len(positional) > 1 else None)
        if unet is not None and _weight(unet, tag) != weight:
            raise ConfigError(
                f"{tag}: separate text-encoder and U-Net weights are not supported here; give one weight."
            )
        found.append((name, weight))
    return TAG.sub("", prompt).strip(), found


def resolve_lora_name(name: str, folder: str | Path) -> Path:
    """The LoRA file `name` stands for under `folder`: a file stem (a run's diffusers file: its phase) first, else an
    `ss_output_name` alias; the newest when several share it (A1111 keeps one of them, too)."""
    from sdft.generation.lora_scan import lora_names

    try:
        entries = lora_names(folder)
    except ConfigError:
        raise ConfigError(
            f"<lora:{name}>: the LoRA folder {folder} does not exist (set --lora-dir, or the UI's 'Find LoRAs "
            "under' folder, to where your LoRAs are)."
        ) from None
    for matches in ([p for p, stem, _ in entries if stem == name], [p for p, _, alias in entries if alias == name]):
        if matches:
            if len(matches) > 1:
                log.warning("<lora:%s>: %d LoRAs are named so; using the newest, %s", name, len(matches), matches[0])
            return matches[0]
    names = sorted({n for _, stem, alias in entries for n in (stem, alias) if n})
    close = difflib.get_close_matches(name, names, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else f" Known names: {', '.join(names[:20]) or 'none'}."
    raise ConfigError(f"<lora:{name}>: no LoRA of that name (file stem or ss_output_name) under {folder}.{hint}")


def with_prompt_loras(params: GenerationParams) -> GenerationParams:
    """`params` with its prompt's LoRA tags moved into `params.loras` (after the listed ones), names resolved in
    `params.lora_dir`; unchanged when the prompt has none."""
    prompt, tags = split_prompt_loras(params.prompt)
    if not tags:
        return params
    folder = params.lora_dir or DEFAULT_LORA_DIR
    specs = [LoraSpec(str(resolve_lora_name(name, folder)), weight) for name, weight in tags]
    return replace(params, prompt=prompt, loras=[*params.loras, *specs])
