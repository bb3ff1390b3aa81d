"""Orchestration: live config patches and self-tuning rules for running loops."""
