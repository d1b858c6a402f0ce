"""The encoder: its nn.Module, goal-aware wrapper, bundle format and the UserEncoder that embeds users."""
