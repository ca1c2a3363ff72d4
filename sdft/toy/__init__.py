"""The toy world: a synthetic captioned dataset, its detector, and the pretrained toy base model (`model=toy`)."""
