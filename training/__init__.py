"""Training the encoder in Lightning: the contrastive and goal-aware modules, data, one fit core and the post-fit steps."""
