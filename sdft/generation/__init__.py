"""Generation: txt2img / img2img with any base model and any number of LoRAs, sweeps into labelled grids.

- `params.py`: what to render (`GenerationParams`, `LoraSpec`), the schedulers, `resolve_lora_file`
- `infotext.py`: AUTOMATIC1111's PNG metadata (`create_infotext`) and LoRA short hashes
- `generator.py`: `Generator`, the base loaded once with LoRAs and embeddings switched on it
- `run.py`: `run_generation`, sweeps into numbered PNGs and one labelled grid (what `sdft generate` writes)

The command line is sdft/cli/generate.py.
"""
