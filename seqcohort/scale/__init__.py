"""Scaling out on Ray: batch embedding on Ray Data (`embed`) and the Ray connection (`session`).

Training on Ray Train lives with the rest of training (`training.ray_train`); see docs/scaling.md.
"""
