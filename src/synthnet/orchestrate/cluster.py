"""Ray, only when a command asks for it: join a cluster (or start Ray on this machine) and run work there.

Only this module and sweep.py import ray, and only inside the commands that need it (`synthnet sweep`,
`synthnet zoo --ray`), so everything else runs without Ray installed.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from synthnet.errors import SynthNetError

INSTALL_HINT = "pip install 'synthnet[ray]'"


def connect(address: str | None) -> Any:
    """The ray module, initialised: joins the cluster at `address` ('auto': the one `ray start --head` runs on
    this machine) or, with None, starts Ray here; a Ray this process already initialised is reused as it is."""
    try:
        import ray
    except ImportError:
        raise SynthNetError(f"this command needs Ray, which is not installed: {INSTALL_HINT}") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address)
        except ConnectionError as exc:
            raise SynthNetError(f"cannot join the Ray cluster at --ray-address {address!r}: {exc}") from None
    return ray


def ray_map(address: str | None) -> tuple[Callable[[Callable, list], Iterator], int]:
    """(pool, cpus): pool(fn, jobs) runs fn(job) for every job as a one-CPU Ray task and yields the results in
    job order, like map(); cpus = CPUs in the cluster (how many tasks run at once)."""
    ray = connect(address)

    def pool(fn: Callable, jobs: Iterable) -> Iterator:
        remote = ray.remote(num_cpus=1)(fn)
        refs = [remote.remote(job) for job in jobs]
        return (ray.get(ref) for ref in refs)

    return pool, max(1, int(ray.cluster_resources().get("CPU", 1)))
