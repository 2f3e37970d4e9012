#!/usr/bin/env bash
# The GPU check (issue 16): run first whenever a GPU machine is lent, in one call, under 8 minutes.
# Installs the carried wheels, prints the machine, runs the tests that take GPU code paths
# (attention incl. cuDNN's, sampling with the KV cache, remat, bf16, sharding rules and checksums),
# then GPT-2 small's MFU at batch 8/16/32 with remat none and save_dots (benchmarks/mfu.py) and
# nanoGPT's baby GPT on Tiny Shakespeare (benchmarks/baby_gpt.py). Every part has its own time
# limit inside one budget (the baby GPT's share is kept for it); a failed part does not stop the
# rest; the exit status is 1 if any part that ran failed. The budget (470 s; not measured on a
# GPU yet): wheels and machine ~15 s; the tests what is left of 150 s once 350 s are kept for the
# rest (~105 s); each MFU run (start-up, ~1 min of compilation, 50 steps, an eval, a checkpoint)
# at most 75 s while 200 s are kept for the baby GPT (5000 steps), so about two fit (batch 16,
# remat none and save_dots); a part with under a minute left (or under its own limit, if
# smaller) is not started but listed as skipped at the end, in the order batch 16, 32, 8.
#
#   bash benchmarks/gpu_check.sh [--dry_run] [--text FILE] [--out DIR] [--budget SECONDS]
#
# --out DIR (default $OUT, else a new temporary folder) gets log.txt (everything printed) and
# RESULTS.md: benchmarks/RESULTS.md with the new sections (on the GPU machine the repo is a copy:
# only $OUT comes back). --dry_run runs the same commands on CPU with tiny sizes (tests only
# collected, a 1-layer GPT-2 for 4 steps, the baby GPT for 20 steps of a tiny model) and writes
# its sections to DIR/RESULTS.md alone: the plumbing, checked in about a minute.
#
# How to run, from a session whose task is lent a GPU (device tool, /work/.library/device/):
#   1. here (the registry answers):  bash benchmarks/gpu_wheels.sh
#      (.whl/: the wheels the GPU image lacks and the Tiny Shakespeare text; .whl/ is git-ignored)
#   2. run(command="bash benchmarks/gpu_check.sh --text .whl/tinyshakespeare.txt",
#          carry=[".whl"], timeout_s=540)
#   3. cp <files_at>/RESULTS.md benchmarks/RESULTS.md (same commit: only the new sections differ;
#      check with git diff), read <files_at>/log.txt, then give_back.
set -u -o pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DRY_RUN=0 TEXT="" DIR=${OUT:-} BUDGET=470
while [ $# -gt 0 ]; do
  case $1 in
    --dry_run) DRY_RUN=1 ;;
    --text) TEXT=${2:-}; shift ;;
    --out) DIR=${2:-}; shift ;;
    --budget) BUDGET=${2:-}; shift ;;
    -h|--help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -z "$TEXT" ] && [ -f .whl/tinyshakespeare.txt ] && TEXT=.whl/tinyshakespeare.txt
if [ -z "$TEXT" ] || [ ! -f "$TEXT" ]; then
  echo "gpu_check.sh: error: --text: no such file: '${TEXT}' (benchmarks/gpu_wheels.sh puts" \
       "Tiny Shakespeare in .whl/)" >&2
  exit 2
fi
TEXT=$(cd "$(dirname "$TEXT")" && pwd)/$(basename "$TEXT")
DIR=${DIR:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}
mkdir -p "$DIR" && DIR=$(cd "$DIR" && pwd)
export PYTHON=${PYTHON:-python3}   # exported: `machine` runs in a child bash
export PYTHONUNBUFFERED=1
exec > >(tee -a "$DIR/log.txt") 2>&1

if [ $DRY_RUN = 1 ]; then
  RESULTS=$DIR/RESULTS.md
  export JAX_PLATFORMS=cpu
  TESTS_ONLY=(--collect-only)
  MFU_SIZE=(--steps 4 --log_every 2 --set model.num_layers=1 --set model.num_heads=2
            --set model.embed_dim=32 --set model.max_len=64 --set data.seq_len=64
            --set data.vocab_size=512)
  BATCHES=(2) BABY_STEPS=(--set train.num_steps=20 --set train.eval_every=10
                          --set checkpoint.every=10 --set train.log_every=10
                          --set model.num_layers=1 --set model.embed_dim=32
                          --set model.num_heads=2 --set data.eval_windows=64
                          --set optimizer.warmup_steps=5)
  BABY_LIMIT=120
else
  RESULTS=$ROOT/benchmarks/RESULTS.md
  TESTS_ONLY=()
  MFU_SIZE=(--steps 50 --log_every 10)
  BATCHES=(16 32 8) BABY_STEPS=()
  BABY_LIMIT=200   # 5000 steps; nanoGPT: about 3 minutes on an A100
fi

START=$SECONDS FAILED=() SKIPPED=()
# part NAME LIMIT_S RESERVE_S CMD...: runs CMD under `timeout`, for at most LIMIT_S seconds and
# never into the last RESERVE_S seconds of the budget (kept for later parts).
part() {
  local name=$1 limit=$2 reserve=$3 t0=$SECONDS rc
  shift 3
  local left=$((BUDGET - (SECONDS - START) - reserve))
  local least=$((limit < 60 ? limit : 60))   # less than this would not get past compiling
  [ "$left" -lt "$limit" ] && limit=$left
  echo "=== $name: $(date -u +%H:%M:%S), limit ${limit} s"
  if [ "$limit" -lt "$least" ]; then
    echo "=== $name: not started (the time budget is spent)"
    SKIPPED+=("$name")
    return
  fi
  echo "+ $*"
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  echo "=== $name: exit $rc after $((SECONDS - t0)) s (total $((SECONDS - START)) s)"
  [ $rc -eq 0 ] || FAILED+=("$name (exit $rc$([ $rc -eq 124 ] && echo ', timed out'))")
}

# --- the carried wheels (.whl/, benchmarks/gpu_wheels.sh): what the GPU image lacks ----------------
SITE=$(mktemp -d "${TMPDIR:-/tmp}/gpu_site.XXXXXX")
if ls .whl/*.whl >/dev/null 2>&1; then
  part "install wheels" 60 $((BUDGET - 60)) "$PYTHON" -m pip install -q --no-index --no-deps \
    --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
fi
export PYTHONPATH=$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}

# --- the machine ---------------------------------------------------------------------------------
machine() {
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm \
    --format=csv
  "$PYTHON" - <<'EOF'
import importlib.metadata as md, jax
from fmjax.runtime.machine import cpu_flags, cpu_name
print("devices:", jax.devices(), "| backend:", jax.default_backend())
print("compute capability:", getattr(jax.devices()[0], "compute_capability", "n/a"))
print("CPU:", cpu_name(), "| flags:", cpu_flags())
names = ("jax", "jaxlib", "jax-cuda13-plugin", "flax", "optax", "orbax-checkpoint", "chex",
         "ml_collections", "tensorboardX", "numpy")
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "-"
print("versions:", ", ".join(f"{n} {version(n)}" for n in names))
EOF
}
export -f machine
part "machine" 60 $((BUDGET - 100)) bash -c machine

# --- tests that take GPU code paths (the multi-device ones: 8 forced CPU devices, subprocesses) ---
TESTS=(
  tests/test_models.py
  tests/test_lm.py::test_cached_decoding_equals_recomputing
  tests/test_lm.py::test_generation_continues_past_the_context
  tests/test_lm.py::test_chunked_decoding_compiles_once_per_request
  tests/test_lm.py::test_top_k_and_top_p_keep_the_right_tokens
  tests/test_lm.py::test_remat_policies_give_the_same_loss_and_gradients
  tests/test_train.py::test_bfloat16_compute_keeps_float32_parameters
  tests/test_integrity.py::test_a_checksum_changes_with_any_bit_or_position
  tests/test_integrity.py::test_a_checksum_does_not_depend_on_the_mesh_nor_on_where_it_is_computed
  tests/test_sharding.py::test_activations_take_their_own_rules_and_an_override_wins
  tests/test_sharding.py::test_fsdp_divides_state_bytes_per_device)
part "tests" 150 $((BABY_LIMIT + 150)) "$PYTHON" -m pytest -q -p no:cacheprovider \
  --durations=5 "${TESTS_ONLY[@]}" "${TESTS[@]}"

# --- GPT-2 small MFU -----------------------------------------------------------------------------
for batch in "${BATCHES[@]}"; do
  for remat in none save_dots; do
    part "mfu batch $batch remat $remat" 75 $BABY_LIMIT "$PYTHON" benchmarks/mfu.py \
      --batch_size "$batch" --remat "$remat" "${MFU_SIZE[@]}" --out "$RESULTS"
  done
done

# --- nanoGPT's baby GPT --------------------------------------------------------------------------
part "baby GPT" $BABY_LIMIT 0 "$PYTHON" benchmarks/baby_gpt.py --text "$TEXT" --out "$RESULTS" \
  "${BABY_STEPS[@]}"

[ $DRY_RUN = 1 ] || cp "$RESULTS" "$DIR/RESULTS.md"
echo "=== done in $((SECONDS - START)) s; log and results in $DIR"
[ ${#SKIPPED[@]} -eq 0 ] || printf '=== SKIPPED (time budget): %s\n' "${SKIPPED[@]}"
if [ ${#FAILED[@]} -gt 0 ]; then
  printf '=== FAILED: %s\n' "${FAILED[@]}"
  exit 1
fi
