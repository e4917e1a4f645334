#!/usr/bin/env bash
# One prepared GPU check, end to end, in under 10 minutes on a CUDA machine: synthesize a data set of the real size,
# shard it, run the gpu-marked tests, then `fastfashion bench` over every backend (seed-style baseline, torch,
# dali-cpu, dali-gpu) plus end-to-end ResNet-18 training fed by each, against a synthetic on-GPU batch; the GPU
# decoder cache on vs off over full epochs (warm cache); the trainer's CUDA path (train, resume, evaluate, predict);
# and the fast recipe's 16 epochs at 112 px (time to accuracy on a GPU; evaluate with and without --tta flip).
# The exit status is non-zero whenever any step failed or DALI did not actually run on the GPU.
#
#   usage: benchmarks/gpu_check.sh [RESULTS_DIR]        (default: $OUT when set, else ./gpu_results)
#
# Works without a package registry: FASTFASHION_SITE names a folder of unpacked wheels for the machine's Python
# (nvidia-dali-cuda130 with its codecs nvidia-nvimgcodec-cu13, nvidia-libnvcomp-cu13, nvidia-nvjpeg and its Python
# dependencies six, packaging, astunparse, gast, libcst, makefun, nvtx, optree; webdataset with braceexpand and
# pyyaml; tqdm; psutil); it is put on PYTHONPATH and its CUDA libraries on LD_LIBRARY_PATH. The repository itself
# is used from source. Environment: FASTFASHION_REAL_DATA=DIR benchmarks the real FashionDataset instead of a
# synthetic set; FASTFASHION_GPU_N (default 5000) sets the synthetic train size.
set -uo pipefail  # no -e: every step runs and reports; the exit status says whether any failed
repo=$(cd "$(dirname "$0")/.." && pwd)
res=${1:-${OUT:-$repo/gpu_results}}
mkdir -p "$res"
export PYTHONPATH="$repo${FASTFASHION_SITE:+:$FASTFASHION_SITE}${PYTHONPATH:+:$PYTHONPATH}"
for lib in "${FASTFASHION_SITE:-/nonexistent}"/nvidia/cu*/lib; do  # CUDA libraries shipped in the pack
  [ -d "$lib" ] && export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
py=${PYTHON:-python3}
log() { echo "[gpu_check $(date +%T)] $*" | tee -a "$res/log.txt"; }

log "environment"
$py - <<'PY' 2>&1 | tee "$res/env.txt"
import importlib, sys, torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
missing = []
for m in ("nvidia.dali", "webdataset", "yaml", "tqdm", "psutil", "matplotlib", "pytest", "PIL"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "?"), "from", getattr(mod, "__file__", "?"))
    except Exception as e:
        print(m, "MISSING:", e)
        if m in ("nvidia.dali", "webdataset", "yaml", "tqdm"):
            missing.append(m)
if not missing:
    from fastfashion.loading.backends.dali_check import gather_facts, gpu_problem
    facts = gather_facts()
    problem = gpu_problem(facts)
    print("DALI/CUDA facts:", facts, "->", problem or "DALI can run on the GPU")
    if problem:
        sys.exit(f"DALI cannot run on this GPU: {problem}")
sys.exit(f"required for this check, not importable: {', '.join(missing)}" if missing else 0)
PY
[ "${PIPESTATUS[0]}" -eq 0 ] || { log "stopping: a required package is missing or DALI cannot use the GPU (see env.txt)"; exit 1; }
$py -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this script is for a GPU machine')" || exit 1

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
if [ -n "${FASTFASHION_REAL_DATA:-}" ]; then
  data=$FASTFASHION_REAL_DATA
else
  n=${FASTFASHION_GPU_N:-5000}
  log "synthesize $n/$((n / 5))/$((n / 5)) images"
  $py -m fastfashion -q synth "$work/data" --train "$n" --val $((n / 5)) --test $((n / 5)) || exit 1
  data=$work/data
fi
log "shard"
t0=$(date +%s.%N)
$py -m fastfashion -q shard "$data" "$work/shards" >> "$res/log.txt" 2>&1 || { log "shard failed"; exit 1; }
log "shard took $(echo "$(date +%s.%N) - $t0" | bc 2>/dev/null || echo '?') s"

status=0
if $py -c "import pytest" 2>/dev/null; then
  log "gpu-marked tests"
  (cd "$repo" && timeout 90 $py -m pytest tests -m gpu -q -p no:cacheprovider > "$res/gpu_tests.txt" 2>&1)
  rc=$?; tail -30 "$res/gpu_tests.txt"; log "gpu tests exit status $rc"; [ $rc -eq 0 ] || status=1
else
  log "pytest missing: gpu-marked tests not run" | tee "$res/gpu_tests.txt"
fi

log "bench (loaders side by side, then end-to-end training)"
timeout 180 $py -m fastfashion bench --shards "$work/shards" --source "$data" \
  --backends seed,torch,dali-cpu,dali-gpu --batch-size 64 --rounds 5 --batches 30 \
  --json "$res/bench.json" --png "$res/bench.png" > "$res/bench.txt" 2>&1
rc=$?; cat "$res/bench.txt"; log "bench exit status $rc"; [ $rc -eq 0 ] || status=1
$py - "$res/bench.json" <<'PY' || { log "a DALI backend did not run: see bench.txt"; status=1; }
import json, sys
loaders = json.load(open(sys.argv[1]))["loaders"]
bad = {n: r.get("reason") for n, r in loaders.items() if n.startswith("dali") and r.get("status") != "ok"}
sys.exit(f"DALI backends skipped: {bad}" if bad else 0)
PY

log "decoder cache on vs off (3 full epochs each)"
timeout 60 $py "$repo/benchmarks/gpu_cache.py" "$work/shards" --epochs 3 --json "$res/gpu_cache.json" \
  > "$res/gpu_cache.txt" 2>&1
rc=$?; cat "$res/gpu_cache.txt"; log "cache check exit status $rc"; [ $rc -eq 0 ] || status=1
log "trainer on CUDA: 2 short epochs, resume to a 3rd, evaluate, predict (AMP, channels_last, checkpoints)"
{
  timeout 45 $py -m fastfashion -q train --shards "$work/shards" --out "$work/run" --epochs 2 --max-steps 40 \
    --image-size 128 &&
  timeout 30 $py -m fastfashion -q train --shards "$work/shards" --out "$work/run" --epochs 3 --max-steps 60 \
    --image-size 128 --resume &&
  timeout 20 $py -m fastfashion -q evaluate --shards "$work/shards" --checkpoint "$work/run/best.pt" --json &&
  timeout 20 $py -m fastfashion -q predict --shards "$work/shards" --checkpoint "$work/run/best.pt" \
    --out "$res/prediction.txt" --zip
} > "$res/train.txt" 2>&1
rc=$?; tail -20 "$res/train.txt"; cp "$work/run/metrics.json" "$res/train_metrics.json" 2>/dev/null
log "trainer exit status $rc"; [ $rc -eq 0 ] || status=1
log "fast recipe: 16 epochs at 112 px from scratch, then evaluate with and without test-time flip"
{
  timeout 150 $py -m fastfashion -q train --recipe fast --shards "$work/shards" --out "$work/fast" --image-size 112 &&
  timeout 20 $py -m fastfashion -q evaluate --shards "$work/shards" --checkpoint "$work/fast/best.pt" --json &&
  timeout 20 $py -m fastfashion -q evaluate --shards "$work/shards" --checkpoint "$work/fast/best.pt" --tta flip --json
} > "$res/fast_recipe.txt" 2>&1
rc=$?; tail -12 "$res/fast_recipe.txt"; cp "$work/fast/metrics.json" "$res/fast_recipe_metrics.json" 2>/dev/null
log "fast recipe exit status $rc"; [ $rc -eq 0 ] || status=1
log "done (status $status): results in $res"
exit $status
