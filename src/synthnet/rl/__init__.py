"""GRPO: the denoiser as a Gaussian policy over weight states, reinforced on real accuracy."""
