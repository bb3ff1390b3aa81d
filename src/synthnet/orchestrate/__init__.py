"""Orchestration: live config patches, self-tuning rules, Ray sweeps (grid and PBT) and Ray zoo tasks."""
