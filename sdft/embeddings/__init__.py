"""Textual inversion and pivotal tuning: new prompt tokens whose embeddings are trained (docs/embeddings.md).

tokens.py    token names, prompt expansion, adding tokens to a tokenizer and text encoder
training.py  the trained vectors (spliced into the text encoder's token embedding), setup, checks, freezing
files.py     A1111/ComfyUI (`emb_params`), diffusers (`{token: tensor}`) and kohya-bundle (`bundle_emb.*`) files
"""
