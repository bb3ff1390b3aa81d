"""Reward of a rollout from the accuracies along its weight-state sequence (on the reward's samples, never test)."""

from __future__ import annotations

import torch

from synthnet.config import RewardConfig


def rollout_reward(acc: torch.Tensor, ce_final: torch.Tensor, norm_ratio: torch.Tensor, k: torch.Tensor,
                   cfg: RewardConfig) -> tuple[torch.Tensor, dict]:
    """Reward per rollout and its terms.

    acc: (R, K_max + 1) accuracy of the init (column 0) and after each step, NaN past the rollout's K;
    ce_final: (R,) cross-entropy of the final state; norm_ratio: (R,) final/initial weight norm;
    k: (R,) steps taken. reward = acc_weight*final + gain_weight*sum(gains+) - penalty_weight*(regressions + blow-up)
    - step_cost*K - ce_weight*CE.
    """
    final = acc.gather(1, k[:, None]).squeeze(1)
    diffs = torch.nan_to_num(acc[:, 1:] - acc[:, :-1])
    gains = diffs.clamp(min=0).sum(1)
    regressions = (-diffs).clamp(min=0).sum(1)
    blowup = (norm_ratio - cfg.norm_limit).clamp(min=0)
    reward = (cfg.acc_weight * final + cfg.gain_weight * gains - cfg.penalty_weight * (regressions + blowup)
              - cfg.step_cost * k - cfg.ce_weight * ce_final)
    return reward, {"final_acc": final, "gains": gains, "regressions": regressions, "blowup": blowup}


def step_rewards(acc: torch.Tensor) -> torch.Tensor:
    """(R, K_max) shaped per-step reward: the accuracy gain of each step (NaN past the rollout's K)."""
    return acc[:, 1:] - acc[:, :-1]
