"""Talking faces made offline, deterministic from a seed: real synthesised speech (espeak-ng), procedural
identities, and ground-truth tracks for the mouth, head pose, speaking manner and emotion. Used to train the
demo model and by the adherence benchmark (``bench/adherence.py``), which knows the truth of every frame."""
