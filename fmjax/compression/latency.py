"""CPU inference latency of runs' jitted eval steps on one fixed batch.

Calls of the runs being compared are interleaved (A, B, A, B, ...), so that a change in the
machine's load (other processes on a shared CPU) slows both alike instead of whichever ran
second; on the 2-core CI machine a lone median still moved between 1.5 and 6 ms from minute to
minute for the same MNIST-1D CNN."""

import statistics
import time

import jax

WARMUP_CALLS = 2   # the first compiles; the second settles caches and thread pools
CALLS = 10


def median_latencies(steps, calls: int = CALLS) -> list[dict]:
    """For each (eval_step, state, batch) of `steps`: {'median_ms', 'calls', 'batch_size',
    'devices'}, the median wall time of `calls` calls of `eval_step(params, extra, batch)`,
    each waited for, after WARMUP_CALLS ('devices': e.g. '8 cpu', the batch split over them)."""
    runs = [lambda s=s: jax.block_until_ready(s[0](s[1].params, s[1].extra, s[2])) for s in steps]
    for run in runs:
        for _ in range(WARMUP_CALLS):
            run()
    times_ms = [[] for _ in runs]
    for _ in range(calls):
        for run, times in zip(runs, times_ms):
            start = time.perf_counter()
            run()
            times.append((time.perf_counter() - start) * 1e3)
    return [{"median_ms": round(statistics.median(times), 4), "calls": calls,
             "batch_size": int(jax.tree.leaves(batch)[0].shape[0]),
             "devices": f"{jax.device_count()} {jax.default_backend()}"}
            for times, (_, _, batch) in zip(times_ms, steps)]
