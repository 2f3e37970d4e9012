"""CPU inference latency of a run's jitted eval step on one fixed batch."""

import statistics
import time

import jax

WARMUP_CALLS = 2   # the first compiles; the second settles caches and thread pools
CALLS = 10


def median_latency(eval_step, state, batch, calls: int = CALLS) -> dict:
    """{'median_ms', 'calls', 'batch_size', 'devices'}: the median wall time of `calls` calls
    of `eval_step(params, extra, batch)` after WARMUP_CALLS, each waited for ('devices': e.g.
    '8 cpu', the batch split over them)."""
    run = lambda: jax.block_until_ready(eval_step(state.params, state.extra, batch))  # noqa: E731
    for _ in range(WARMUP_CALLS):
        run()
    times_ms = []
    for _ in range(calls):
        start = time.perf_counter()
        run()
        times_ms.append((time.perf_counter() - start) * 1e3)
    batch_size = jax.tree.leaves(batch)[0].shape[0]
    return {"median_ms": round(statistics.median(times_ms), 4), "calls": calls,
            "batch_size": int(batch_size),
            "devices": f"{jax.device_count()} {jax.default_backend()}"}
