"""Every seed range SynthNet draws from, in one place, and the record of which seeds a model has used.

A model's record (`Synthesizer.seeds`, saved in every checkpoint) names each range it used: the zoo runs it trained
and validated on, the probe inits its design choices were scored on, GRPO's held-out inits and the prompts it drew.
`synthnet eval` refuses exactly those seeds, naming the range, and accepts any other.
"""

from __future__ import annotations

ZOO_SEEDS = "0:512"  # default zoo seeds
EVAL_SEEDS = "100000:100064"  # default evaluation seeds
PROBE = (300_000, 300_512)  # inits the benchmarks score design choices on (val split), half-open
SIGNAL_PROBE = (700_000, 701_024)  # inits benchmarks/grpo_signal.py measures GRPO's signal on, half-open
HELDOUT_BASE = 500_000  # GRPO's fixed held-out inits: HELDOUT_BASE .. + grpo.eval_inits
PROMPT_BASE = 1_000_000  # GRPO prompts: a block of PROMPT_BLOCK seeds per grpo.seed, from here up
PROMPT_BLOCK = 10**7  # prompts one run can draw before it would reach the next grpo.seed's block

Record = dict[str, list[list[int]]]  # range name -> half-open [start, stop) intervals


def prompt_seeds(grpo_seed: int, drawn: int, n: int) -> list[int]:
    """The next n prompt seeds of a GRPO run that has drawn `drawn` so far: never one twice in a run."""
    start = PROMPT_BASE + grpo_seed * PROMPT_BLOCK + drawn
    return list(range(start, start + n))


def intervals(seeds: list[int]) -> list[list[int]]:
    """Sorted seeds as half-open [start, stop) runs: [0, 1, 2, 7] -> [[0, 3], [7, 8]]."""
    out: list[list[int]] = []
    for s in sorted(set(seeds)):
        if out and out[-1][1] == s:
            out[-1][1] = s + 1
        else:
            out.append([s, s + 1])
    return out


def supervised_record(zoo_seeds: list[int]) -> Record:
    """What a supervised model has used: its zoo's runs and the probe inits its design is chosen on."""
    return {"zoo": intervals(zoo_seeds), "probe": [list(PROBE)], "signal_probe": [list(SIGNAL_PROBE)]}


def clashes(record: Record, seeds: list[int]) -> list[str]:
    """'name a:b' for every range of `record` that holds one of `seeds` (empty: none was used)."""
    wanted = set(seeds)
    return [f"{name} {a}:{b}" for name, spans in record.items() for a, b in spans
            if any(a <= s < b for s in wanted)]
