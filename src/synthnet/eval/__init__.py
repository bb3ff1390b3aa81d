"""Evaluation a sceptic trusts: teacher, SynthNet per K, zoo baselines, novelty, robustness, speed, reports."""
