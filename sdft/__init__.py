"""sdft: fine-tune Stable Diffusion 1.x with LoRA/DreamBooth."""
