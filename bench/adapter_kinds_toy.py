"""Per adapter kind: a short DreamBooth run on the toy base, its files reloaded by each loader, and the toy fidelity.

Each kind trains `+experiment=quickstart` (model=toy, datasets/toy_subject, prior preservation, lr 5e-3) with its
conf/adapter preset at one seed (a finished run under --out is reused); its sdft/diffusers file, loaded by sdft's
generator (what `sdft generate` / `ui` use), is measured with `sdft.toy.measure` (fidelity, leakage, drift over
32 + 32 generations). Then both files it writes (the sdft/diffusers file and the kohya/LyCORIS file) are loaded by
sdft's generator, by sdft's importer (`phase.init_lora`, `sdft export`) and by diffusers' `load_lora_weights`, and
each load that works renders 4 identifier-prompt images compared with the measured load's (max abs pixel diff, 0..1).
One training seed: a single sample per kind, not a comparison with error bars.
Usage: python bench/adapter_kinds_toy.py [--kinds lora,locon,dora,loha,lokr,oft] [--steps 200] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PRESETS = {"lora": "lora_attn_ff", "locon": "locon", "dora": "dora", "loha": "loha", "lokr": "lokr", "oft": "oft"}
LOADERS = ("sdft generate", "sdft init_lora", "diffusers")


def load(loader: str, path: Path):
    """A toy pipeline with the file loaded by `loader` (raises what the loader raises)."""
    from sdft.adapters.load import load_lora_into
    from sdft.config import ModelConfig
    from sdft.generation.generator import Generator
    from sdft.families.load import load_pipeline

    if loader == "sdft generate":
        gen = Generator(ModelConfig(path="toy"), device="cpu")
        gen.set_loras([str(path)])
        return gen.pipe
    pipe = load_pipeline(ModelConfig(path="toy"))
    if loader == "sdft init_lora":
        load_lora_into(pipe.unet, pipe.text_encoder, path, train_unet=False, train_text_encoder=False)
    else:
        pipe.load_lora_weights(str(path))
    return pipe


def train(kind: str, seed: int, out: Path, steps: int) -> Path:
    """The kind's quickstart run (reused when its folder under `out` already holds the final file)."""
    import hashlib

    from sdft.toy.measure import quickstart_lora

    overrides = [f"adapter={PRESETS[kind]}", f"trainer.max_steps={steps}"]
    done = (
        out
        / f"seed{seed}-{hashlib.sha1(repr(overrides).encode()).hexdigest()[:8]}"
        / "main"
        / "lora"
        / "pytorch_lora_weights.safetensors"
    )  # quickstart_lora's run folder
    return done if done.is_file() else quickstart_lora(seed, out, overrides)


def images(pipe):
    import numpy as np

    from sdft.toy.control import sample
    from sdft.toy.measure import IDENTIFIER_PROMPT, IDENTIFIER_SEED

    return np.stack(
        [np.asarray(im, dtype=np.float32) / 255 for im in sample(pipe, [IDENTIFIER_PROMPT] * 4, seed=IDENTIFIER_SEED)]
    )


def main() -> None:
    import warnings

    from sdft.config import ModelConfig
    from sdft.families.load import load_pipeline
    from sdft.toy.measure import base_reference, measure

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=",".join(PRESETS))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="sdft-kinds-"))
    base = load_pipeline(ModelConfig(path="toy"))
    reference = base_reference(base)
    rows = [
        {"kind": "(base)", "file": "-", "loader": "-", "loads": "-", **measure(base, None, reference=reference).row()}
    ]
    for kind in args.kinds.split(","):
        sdft_file = train(kind, args.seed, out, args.steps)
        kohya = [p for p in sdft_file.parent.glob("*.safetensors") if p != sdft_file]
        measured = load("sdft generate", sdft_file)
        row = {
            "kind": kind,
            "file": "sdft",
            "loader": "sdft generate",
            "loads": "yes",
            **measure(measured, None, reference=reference).row(),
        }
        want = images(measured)
        for fmt, path in (("sdft", sdft_file), ("kohya", kohya[0] if kohya else None)):
            for loader in LOADERS:
                if (fmt, loader) != ("sdft", "sdft generate"):
                    row = {"kind": kind, "file": fmt, "loader": loader}
                if path is None:
                    rows.append({**row, "loads": "no file"})
                    continue
                try:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        pipe = load(loader, path)
                    row.update(
                        loads="yes", max_diff=round(float(abs(images(pipe) - want).max()), 5), warnings=len(caught)
                    )
                except Exception as err:  # noqa: BLE001  (a loader refusing the file is a result here)
                    row.update(loads="no", error=f"{type(err).__name__}: {str(err).splitlines()[0][:140]}")
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\n| kind | file | loader | loads | max diff | fidelity | leakage | drift |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        cells = [f"{r[m]:.3f}" if m in r else "" for m in ("max_diff", "fidelity", "leakage", "drift")]
        print(f"| {r['kind']} | {r['file']} | {r['loader']} | {r['loads']} | " + " | ".join(cells) + " |")
    (out / "adapter_kinds_toy.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
