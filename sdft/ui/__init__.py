"""`sdft ui`: the Gradio page (`app.py`, the Generate tab; `session.py` its logic) and the Train / Runs tabs
(`train_tabs.py` layout, `train.py` logic), front ends to the same commands, never a second trainer."""
