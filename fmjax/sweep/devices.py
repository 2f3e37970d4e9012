"""Which devices each of `--workers N` trial processes gets, decided without JAX.

The sweep process must not take an accelerator (on a GPU JAX would hold memory the trials need),
yet loading an experiment imports fmjax.tasks, whose module-level PRNG keys start a backend: so
`pin_sweep_to_cpu` gives the sweep process JAX's CPU backend before JAX is imported, and its trials
get the environment it was started with (`trial_environ`). Devices are counted from the operating
system: NVIDIA GPUs in /proc/driver/nvidia/gpus,
TPU chips as /dev/accel* (v2-v4) or /dev/vfio/N (v5e and later), CPU cores from the process's
affinity mask. Each worker gets an equal, disjoint share: CUDA_VISIBLE_DEVICES; TPU_VISIBLE_CHIPS
with libtpu's per-process bounds and its own port; or its own cores (`os.sched_setaffinity` in
fmjax/sweep/child.py), which XLA's CPU thread pools size themselves to.
"""

import dataclasses
import os
import pathlib

from fmjax.errors import UserError

TPU_BOUNDS = {1: "1,1,1", 2: "1,2,1", 4: "2,2,1"}   # chips per process -> libtpu's chip bounds
TPU_FIRST_PORT = 8476
_trial_environ: dict | None = None   # the environment before `pin_sweep_to_cpu`


def pin_sweep_to_cpu() -> None:
    """Call first thing in the sweep process, before JAX is imported."""
    global _trial_environ
    _trial_environ = dict(os.environ)
    os.environ["JAX_PLATFORMS"] = "cpu"


def trial_environ() -> dict:
    """The environment trials start from: the sweep's own, as it was started."""
    return dict(os.environ if _trial_environ is None else _trial_environ)


@dataclasses.dataclass(frozen=True)
class Worker:
    """What one worker's trial processes get: extra environment and, on CPU, the cores."""
    env: dict
    cpus: tuple[int, ...] = ()      # () = the sweep's own affinity
    label: str = "all devices"


def nvidia_gpus() -> int:
    gpus = pathlib.Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0


def tpu_chips() -> int:
    accel = list(pathlib.Path("/dev").glob("accel[0-9]*"))
    vfio = pathlib.Path("/dev/vfio")
    return len(accel) or (sum(p.name.isdigit() for p in vfio.iterdir()) if vfio.is_dir() else 0)


def platform(environ: dict) -> str:
    """'gpu', 'tpu' or 'cpu': JAX_PLATFORMS if it names one, else what the machine has."""
    named = environ.get("JAX_PLATFORMS", "").split(",")[0].strip().lower()
    if named:
        return "gpu" if named in ("cuda", "gpu", "rocm") else named
    return "gpu" if nvidia_gpus() else "tpu" if tpu_chips() else "cpu"


def _shares(items: list, num: int, what: str) -> list[list]:
    if num > len(items):
        raise UserError(f"--workers={num} but this machine has {len(items)} {what}: each worker "
                        "needs at least one")
    per = len(items) // num
    return [items[i * per:(i + 1) * per] for i in range(num)]


def workers(num: int, environ: dict | None = None) -> list[Worker]:
    """The devices of `num` workers on this machine; UserError if there are fewer devices."""
    environ = trial_environ() if environ is None else environ
    if num < 1:
        raise UserError(f"--workers={num}: must be at least 1")
    kind = platform(environ)
    if num == 1:
        return [Worker({})]
    if kind == "gpu":
        visible = environ.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else [str(i) for i in range(nvidia_gpus())]
        return [Worker({"CUDA_VISIBLE_DEVICES": ",".join(share)}, label=f"GPU {','.join(share)}")
                for share in _shares(ids, num, "GPUs")]
    if kind == "tpu":
        return tpu_workers(num, tpu_chips())
    return [Worker({}, tuple(share), f"CPU cores {','.join(map(str, share))}")
            for share in _shares(sorted(os.sched_getaffinity(0)), num, "CPU cores")]


def tpu_workers(num: int, chips: int) -> list[Worker]:
    """One libtpu process per worker on `chips // num` chips, each with its own port."""
    per = chips // num if num <= chips else 0
    if per not in TPU_BOUNDS or per * num != chips:
        counts = ", ".join(str(chips // k) for k in TPU_BOUNDS if k <= chips and chips % k == 0)
        raise UserError(f"--workers={num} cannot split this TPU VM's {chips} chips: a worker "
                        f"takes 1, 2 or 4 chips (--workers {counts or 'is not possible'})")
    out = []
    for i, share in enumerate(_shares(list(range(chips)), num, "TPU chips")):
        port = TPU_FIRST_PORT + i
        chips_text = ",".join(map(str, share))
        out.append(Worker({
            "TPU_VISIBLE_CHIPS": chips_text, "TPU_VISIBLE_DEVICES": chips_text,
            "TPU_CHIPS_PER_PROCESS_BOUNDS": TPU_BOUNDS[per], "TPU_PROCESS_BOUNDS": "1,1,1",
            "TPU_PROCESS_PORT": str(port), "TPU_PROCESS_ADDRESSES": f"localhost:{port}",
            "TPU_MESH_CONTROLLER_ADDRESS": f"localhost:{port}",
            "TPU_MESH_CONTROLLER_PORT": str(port), "CLOUD_TPU_TASK_ID": "0",
        }, label=f"TPU chips {chips_text}"))
    return out
