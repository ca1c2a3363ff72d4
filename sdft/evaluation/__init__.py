"""Evaluation: DreamBooth's metrics (DINO, CLIP-I, CLIP-T, PRES, DIV), instance fidelity, language drift and cost,
for one run (`sdft eval`) or the LoRA / DreamBooth comparison (`+experiment=compare`). See docs/eval.md."""
