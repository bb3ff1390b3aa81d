"""Live patches: change live config keys of a running loop at its next step boundary, ramp them linearly,
roll them back, keep an audit log, and let declared self-tuning rules patch the run the same way.

The client (`synthnet patch RUN ...`) and the loop talk through files in RUN/patches/:
  inbox/<time_ns>-<pid>-<hex>.json   requests, written atomically, consumed in name (= submission) order
  done/, refused/                    consumed requests; JSON ones gain "at_step", the step they were consumed at
  history.jsonl                      audit log, one event per row (`list_patches` folds it into one row per patch)
A loop checkpoint carries `LivePatches.state_dict()`. Resuming from it restores the patched values and ramps,
rewinds history.jsonl to the checkpoint and re-queues the requests consumed after it, which are then applied
again at the steps they were first applied at: a resumed run sees exactly the patches of an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from omegaconf import BooleanNode, FloatNode, IntegerNode, StringNode
from omegaconf.errors import OmegaConfBaseException

from synthnet.config import CHOICES, KNOBS, LIVE, Config, accepted, check_key
from synthnet.errors import SynthNetError
from synthnet.jsonl import read_jsonl
from synthnet.weights import atomic_write_text

PATCH_DIR = "patches"  # sub-directory of a run directory
NODES = {int: IntegerNode, float: FloatNode, str: StringNode, bool: BooleanNode}  # OmegaConf's converters


def live_keys_near(key: str) -> str:
    section = key.split(".")[0]
    keys = [k for k in LIVE if k.startswith(section + ".")] or LIVE
    return f"live keys{' in ' + section if keys is not LIVE else ''}: {', '.join(keys)}"


def check_value(key: str, value: Any) -> Any:
    """The value a live key gets from `value` (a CLI string or a JSON value), converted as OmegaConf would."""
    knob = KNOBS.get(key)
    if knob is None:
        raise SynthNetError(f"unknown config key {key!r}; {live_keys_near(key)}")
    if not knob.live:
        raise SynthNetError(f"{key} is restart-only (fixed for the life of a run); {live_keys_near(key)}")
    try:
        new = NODES[knob.type]().validate_and_convert(value)
    except OmegaConfBaseException:
        new = None
    check_key(key, new, given=value)
    return new


def check_patch(values: dict[str, Any], ramp: Any) -> dict[str, Any]:
    """Validate every assignment and the ramp of one patch; returns the converted values."""
    if type(ramp) is not int or ramp < 0:
        raise SynthNetError(f"ramp must be a whole number of steps >= 0, got {ramp!r}")
    if not values:
        raise SynthNetError("nothing to patch: give key=value pairs, e.g. grpo.lr=1e-4")
    out = {key: check_value(key, v) for key, v in values.items()}
    choice = [k for k in out if k in CHOICES]
    if ramp and choice:
        raise SynthNetError(f"a ramp needs numeric keys; {choice[0]} takes {accepted(choice[0])}")
    return out


def parse_request(req: dict) -> dict:
    """A request file's JSON object, validated and converted; SynthNetError names what is wrong."""
    if req.get("kind") not in ("patch", "rollback"):
        raise SynthNetError('not a patch request: "kind" must be "patch" or "rollback"')
    if req["kind"] == "rollback":
        return req
    if not isinstance(req.get("set"), dict):
        raise SynthNetError('a patch request needs "set": {key: value}')
    return {**req, "set": check_patch(req["set"], req.get("ramp", 0)), "ramp": req.get("ramp", 0)}


# ---- client side: `synthnet patch RUN ...` ----

def patch_dir(run_dir: Path | str) -> Path:
    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise SynthNetError(f"{run} is not a run directory (no config.yaml)")
    return run / PATCH_DIR


def submit(root: Path, req: dict) -> dict:
    name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}.json"
    atomic_write_text(root / "inbox" / name, json.dumps(req))
    return {"request": name, **req}


def request_patch(run_dir: Path | str, assignments: Sequence[str], ramp: int = 0) -> dict:
    """Queue `key=value` assignments for the run's next step boundary; on any error nothing is written."""
    root = patch_dir(run_dir)
    values: dict[str, str] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SynthNetError(f"{item!r} is not key=value (e.g. grpo.lr=1e-4)")
        if key in values:
            raise SynthNetError(f"{key} is given twice")
        values[key] = raw
    return submit(root, {"kind": "patch", "set": check_patch(values, ramp), "ramp": ramp})


def request_rollback(run_dir: Path | str) -> dict:
    """Queue a rollback of the most recent applied patch (refused by the loop if there is none)."""
    return submit(patch_dir(run_dir), {"kind": "rollback"})


def read_history(root: Path) -> list[dict]:
    return read_jsonl(root / "history.jsonl")


COLUMNS = ("id", "step", "key", "old", "new", "ramp", "status", "source", "request", "reason")


def list_patches(run_dir: Path | str) -> list[dict]:
    """One row (COLUMNS) per patched key and per refused request, with its current status:
    id, step (loop steps done when applied), key, old, new, ramp, status (applied | ramping | rolled_back |
    superseded | refused), source ('user' or a rule name), request (file name), reason (why it was refused)."""
    rows, by_patch = [], {}
    for event in read_history(patch_dir(run_dir)):
        if event["event"] == "update":
            by_patch[event["id"], event["key"]]["status"] = event["status"]
        else:
            rows.append({k: event.get(k) for k in COLUMNS})
            by_patch[event["id"], event["key"]] = rows[-1]
    return rows


# ---- self-tuning rules ----

@dataclass(frozen=True)
class Rule:
    name: str  # shown as the patch source in the history
    metric: str  # metrics-row key watched
    op: str  # '>' or '<'
    threshold: float  # the rule fires when row[metric] <op> threshold
    key: str  # numeric live config key it changes
    factor: float  # new value = current value * factor, clamped to the key's bounds
    cooldown: int  # steps after firing during which the rule stays quiet

    def __post_init__(self):
        numeric = self.key in LIVE and self.key not in CHOICES
        if not numeric or self.op not in ("<", ">") or not self.factor > 0 or self.cooldown < 0:
            raise SynthNetError(f"rule {self.name}: needs a numeric live key (got {self.key!r}), op '<' or '>', "
                                f"factor > 0 and cooldown >= 0")

    def fires(self, value: float) -> bool:
        return value > self.threshold if self.op == ">" else value < self.threshold


RULES = {r.name: r for r in (
    # all groups tied -> no group-relative gradient: explore more
    Rule("sigma_up_on_zero_spread", "zero_spread_groups", ">", 0.5, "grpo.sigma", 1.5, 10),
    # the policy drifts away from the supervised model: slow down
    Rule("lr_down_on_kl", "kl", ">", 0.1, "grpo.lr", 0.5, 10),
)}
RULE_FORM = "NAME:METRIC>THRESHOLD:KEY*FACTOR:COOLDOWN (e.g. sigma_up:zero_spread_groups>0.5:grpo.sigma*1.5:10)"


def parse_rule(text: str) -> Rule:
    """A rule from the RULES registry by name, or written out as RULE_FORM."""
    if text in RULES:
        return RULES[text]
    m = re.fullmatch(r"(\w+):([^:<>]+)([<>])([^:]+):([\w.]+)\*([^:]+):(\d+)", text)
    try:
        return Rule(m[1], m[2], m[3], float(m[4]), m[5], float(m[6]), int(m[7]))
    except (TypeError, ValueError):  # TypeError: no match
        raise SynthNetError(f"rule {text!r} is neither one of {', '.join(RULES)} nor {RULE_FORM}") from None


# ---- trainer side ----

def read_request(path: Path) -> tuple[dict, str]:
    """(request, '') for a valid request file; else (its JSON object, or {} if it has none, one-line reason)."""
    try:
        req = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {}, f"unreadable request: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    if not isinstance(req, dict) or type(req.get("at_step", 0)) is not int:
        return {}, "not a patch request: expected a JSON object with an integer at_step if any"
    try:
        return parse_request(req), ""
    except SynthNetError as exc:
        return req, str(exc)


class LivePatches:
    """The loop's side. At every step boundary: `patch_id = patches.apply(steps_done)`; after each step:
    `patches.observe(steps_done, row)`; into each checkpoint: `patches.state_dict()`; on resume:
    `LivePatches(run_dir, cfg, rules, state=ckpt["patches"])` before anything reads cfg."""

    def __init__(self, run_dir: Path | str, cfg: Config, rules: Sequence[Rule] = (), state: dict | None = None):
        state = copy.deepcopy(state or {"next_id": 1, "stack": [], "ramps": [], "fired": {}, "values": {},
                                         "rows": 0, "rules": []})
        saved = [Rule(**r) for r in state["rules"]]
        if rules and saved and list(rules) != saved:
            raise SynthNetError(f"{run_dir} runs with rules {[r.name for r in saved]}: resume with the same or none")
        self.root = Path(run_dir) / PATCH_DIR  # where requests and the history live
        self.cfg = cfg  # the loop's config, changed in place
        self.rules = list(rules) or saved  # self-tuning rules (empty: off)
        self.next_id = state["next_id"]  # id the next applied patch gets
        self.stack = state["stack"]  # applied patches not rolled back, oldest first: {"id", "old": {key: value}}
        self.ramps = state["ramps"]  # active ramps: {"id", "key", "start", "target", "n", "i" (increments done)}
        self.fired = state["fired"]  # rule name -> step it last fired
        self.touched = set(state["values"])  # keys ever patched: their values travel in the checkpoint
        for key, value in state["values"].items():
            self.set(key, value)
        self.history = self.rewind(state["rows"])  # audit rows this state accounts for

    def get(self, key: str) -> Any:
        section, name = key.split(".")
        return getattr(getattr(self.cfg, section), name)

    def set(self, key: str, value: Any) -> None:
        section, name = key.split(".")
        setattr(getattr(self.cfg, section), name, value)

    @property
    def active(self) -> int:
        """Id of the patch whose values are in force (the most recent not rolled back); 0 = none."""
        return self.stack[-1]["id"] if self.stack else 0

    def state_dict(self) -> dict:
        """Primitives only (loads with torch.load(weights_only=True))."""
        return copy.deepcopy({"next_id": self.next_id, "stack": self.stack, "ramps": self.ramps,
                              "fired": self.fired, "values": {k: self.get(k) for k in sorted(self.touched)},
                              "rows": len(self.history), "rules": [asdict(r) for r in self.rules]})

    def rewind(self, keep: int) -> list[dict]:
        """Drop history rows past `keep` and put the user requests behind them back in the inbox."""
        rows = read_history(self.root)
        (self.root / "inbox").mkdir(parents=True, exist_ok=True)
        for name in dict.fromkeys(r["request"] for r in rows[keep:] if r["source"] == "user"):
            for sub in ("done", "refused"):
                if (self.root / sub / name).exists():
                    os.replace(self.root / sub / name, self.root / "inbox" / name)
        if len(rows) > keep:
            atomic_write_text(self.root / "history.jsonl", "".join(json.dumps(r) + "\n" for r in rows[:keep]))
        return rows[:keep]

    def log(self, **row: Any) -> None:
        self.history.append(row)
        atomic_write_text(self.root / "history.jsonl", "".join(json.dumps(r) + "\n" for r in self.history))

    def apply(self, step: int) -> int:
        """Advance ramps one increment, then apply the inbox; `step` = steps done. Returns the active patch id."""
        for ramp in list(self.ramps):
            self.advance(ramp, step)
        for path in sorted((self.root / "inbox").iterdir()):
            if not path.name.startswith("."):  # '.name.tmp' files are requests still being written
                self.consume(path, step)
        return self.active

    def consume(self, path: Path, step: int) -> None:
        """Apply, or refuse, one inbox request and file it away; never raises on a bad request."""
        req, error = read_request(path)
        if req.get("at_step", step) > step:
            return  # replayed after a resume: waits for the step it was first applied at
        if not error and req["kind"] == "rollback" and not self.stack:
            error = "nothing to roll back"
        if error:
            self.log(event="refused", id=0, step=step, key=None, status="refused", source="user",
                     request=path.name, reason=error)
        elif req["kind"] == "rollback":
            self.rollback(step, "user", path.name)
        else:
            self.patch(req["set"], req["ramp"], step, "user", path.name)
        dest = self.root / ("refused" if error else "done") / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if req:
            atomic_write_text(dest, json.dumps({**req, "at_step": step}))
            path.unlink()
        else:
            os.replace(path, dest)

    def patch(self, values: dict[str, Any], ramp: int, step: int, source: str, request: str | None) -> None:
        """Apply checked values as one patch (a ramp of N > 1 steps spreads each over N apply() calls)."""
        pid, n = self.next_id, max(ramp, 1)
        self.next_id += 1
        for old_ramp in [r for r in self.ramps if r["key"] in values]:
            self.ramps.remove(old_ramp)
            self.log(event="update", id=old_ramp["id"], step=step, key=old_ramp["key"], status="superseded",
                     source=source, request=request)
        old = {key: self.get(key) for key in values}
        self.stack.append({"id": pid, "old": old})
        self.touched.update(values)
        for key, new in values.items():
            self.log(event="patch", id=pid, step=step, key=key, old=old[key], new=new, ramp=ramp,
                     status="ramping" if n > 1 else "applied", source=source, request=request)
            self.ramps.append({"id": pid, "key": key, "start": old[key], "target": new, "n": n, "i": 0})
            self.advance(self.ramps[-1], step)

    def advance(self, ramp: dict, step: int) -> None:
        """One linear increment from start to target; the last one sets the target exactly."""
        ramp["i"] += 1
        value = ramp["start"] + (ramp["target"] - ramp["start"]) * ramp["i"] / ramp["n"]
        done = ramp["i"] == ramp["n"]
        self.set(ramp["key"], ramp["target"] if done else round(value) if KNOBS[ramp["key"]].type is int else value)
        if done:
            self.ramps.remove(ramp)
            if ramp["n"] > 1:
                self.log(event="update", id=ramp["id"], step=step, key=ramp["key"], status="applied",
                         source="ramp", request=None)

    def rollback(self, step: int, source: str, request: str | None) -> None:
        """Restore the values from before the most recent applied patch, ending its ramps."""
        top = self.stack.pop()
        self.ramps = [r for r in self.ramps if r["id"] != top["id"]]
        for key, value in top["old"].items():
            self.log(event="update", id=top["id"], step=step, key=key, old=self.get(key), new=value,
                     status="rolled_back", source=source, request=request)
            self.set(key, value)

    def observe(self, step: int, row: dict) -> None:
        """Evaluate the rules on a metrics row; a rule that fires patches its key (within bounds) at once."""
        for rule in self.rules:
            value = row.get(rule.metric)
            quiet = rule.name in self.fired and step - self.fired[rule.name] < rule.cooldown
            if not isinstance(value, (int, float)) or quiet or not rule.fires(value):
                continue
            knob, current = KNOBS[rule.key], self.get(rule.key)
            new = min(max(current * rule.factor, knob.low), knob.high)
            new = round(new) if knob.type is int else new
            if new != current:
                self.fired[rule.name] = step
                self.patch({rule.key: new}, 0, step, rule.name, None)
