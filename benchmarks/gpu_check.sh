#!/usr/bin/env bash
# The prepared GPU check, end to end, in a fixed budget of 8 minutes wall (each step under `timeout`, capped by what
# is left of the budget; sizes fixed, not from the machine). Steps, each timed and logged under its name:
#   unpack    the DALI wheel pack, when FASTFASHION_PACK names a folder of its part-* files (see "Offline" below)
#   env       torch, CUDA, DALI and the driver: whether DALI can run on this GPU (and why not)
#   synth     a synthetic set, 2,000 train / 400 val / 400 test images
#   shard     the shard set
#   tests     the gpu-marked tests (tests/test_gpu_path.py: colour-keyed train graph, .lbl/.cls labels, evaluate vs
#             torch, 2-rank DDP over gloo on one GPU, resume; the loader's and the trainer's other CUDA tests)
#   bench     `fastfashion bench`: seed, torch, dali-cpu, dali-gpu side by side, the hw_decoder_load sweep where the
#             GPU has a hardware JPEG decoder, end-to-end ResNet-18 training fed by each
#   dali      DALI really ran on the GPU (the bench's dali-gpu row is there and ok)
#   uint8     uint8 vs float delivery (benchmarks/uint8.py): dali-gpu, dali-cpu and torch, each batch moved to the GPU
#             and finished there (colour matrix + normalization): img/s, move + finish ms, bytes per batch
#   cache     the decoder cache on vs off over full epochs (benchmarks/gpu_cache.py)
#   train, resume, evaluate, predict   the trainer on CUDA with dali-gpu (AMP, channels_last, checkpoints)
#   ddp       torchrun, 2 ranks on the one GPU over gloo (FASTFASHION_DIST_BACKEND=gloo), one epoch
#   fast      the fast recipe, 16 epochs at 112 px, validated every epoch (time to accuracy on a GPU)
# Results: ONE archive gpu_check.tar.gz (every step's log and JSON, the figures) and summary.txt (a table to paste
# into the README: each step's status and seconds, then the measured numbers), nothing else. The exit status is
# non-zero, and summary.txt and the last line name the failed steps, whenever any step fails (or ran out of the
# budget) or DALI did not run on the GPU.
#
#   usage: benchmarks/gpu_check.sh [--dry-run] [RESULTS_DIR]    (default: $OUT when set, else ./gpu_results)
#
# --dry-run: every step on the CPU (dali-cpu where the GPU would be used, a tiny set, a few batches), through the same
# timing, archiving and exit-status code; `make test` runs it (tests/test_gpu_check.py). Environment for tests:
# GPU_CHECK_FAIL_STEP=NAME makes step NAME fail (the script must then fail, naming it); GPU_CHECK_SKIP="A B" skips
# steps (reported as skipped); GPU_CHECK_TESTS="pytest selection" replaces the tests step's selection;
# GPU_CHECK_BUDGET=SECONDS replaces the 470 s the steps may take in all; GPU_CHECK_SCALE=K multiplies every limit.
#
# Offline (no package registry on the GPU machine): FASTFASHION_PACK=DIR with the part-* files of the DALI pack
# (DALI for CUDA 13 with its codecs and Python dependencies, webdataset, pyyaml, tqdm, psutil; torch must already be
# installed), unpacked by the `unpack` step; or FASTFASHION_SITE=DIR, a folder of wheels already unpacked. Either is
# put on PYTHONPATH and its CUDA libraries on LD_LIBRARY_PATH. The repository itself is used from source.
set -uo pipefail  # no -e: every step runs and reports; the exit status says whether any failed
dry=0
if [ "${1:-}" = "--dry-run" ]; then dry=1; shift; fi
repo=$(cd "$(dirname "$0")/.." && pwd)
res=${1:-${OUT:-$repo/gpu_results}}
mkdir -p "$res" || exit 2
res=$(cd "$res" && pwd)
cd "$repo" || exit 2
py=${PYTHON:-python3}
# seconds for every step together (with the archive and summary, under 8 minutes); the dry run on a small CPU is
# slower than the GPU run, so its limits are each step's times GPU_CHECK_SCALE (default 4 there, 1 on the GPU)
scale=${GPU_CHECK_SCALE:-$((dry ? 4 : 1))}
budget=${GPU_CHECK_BUDGET:-$((470 * scale))}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
logs=$work/results; mkdir -p "$logs"
t_start=$(date +%s)
failed=()
printf 'step\tstatus\tseconds\tlimit\n' > "$logs/steps.tsv"

say() { echo "[gpu_check $(date +%T)] $*"; }

step() {  # step NAME TIMEOUT CMD...: CMD under timeout (at most what is left of the budget), output in NAME.log
  local name=$1 limit=$2 rc t0 secs left
  shift 2
  if [[ " ${GPU_CHECK_SKIP:-} " == *" $name "* ]]; then
    printf '%s\tskipped\t0\t0\n' "$name" >> "$logs/steps.tsv"; say "$name: skipped (GPU_CHECK_SKIP)"; return 0
  fi
  limit=$((limit * scale))
  left=$((budget - ($(date +%s) - t_start)))
  if [ "$left" -lt 3 ]; then
    printf '%s\tno time left\t0\t0\n' "$name" >> "$logs/steps.tsv"; failed+=("$name")
    say "$name: FAILED (the budget of $budget s is spent)"; return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  say "$name (limit ${limit} s)"
  t0=$(date +%s.%N)
  if [ "${GPU_CHECK_FAIL_STEP:-}" = "$name" ]; then
    timeout "$limit" bash -c 'echo "injected failure (GPU_CHECK_FAIL_STEP)"; exit 3' > "$logs/$name.log" 2>&1
  else
    timeout "$limit" "$@" > "$logs/$name.log" 2>&1
  fi
  rc=$?
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  tail -n 8 "$logs/$name.log" | sed 's/^/    /'
  if [ "$rc" -eq 0 ]; then
    printf '%s\tok\t%s\t%s\n' "$name" "$secs" "$limit" >> "$logs/steps.tsv"; say "$name: ok in $secs s"
  else
    [ "$rc" -eq 124 ] && rc="timed out"
    printf '%s\tfailed (%s)\t%s\t%s\n' "$name" "$rc" "$secs" "$limit" >> "$logs/steps.tsv"; failed+=("$name")
    say "$name: FAILED ($rc) after $secs s"
  fi
  return 0
}

# --- where the code and its dependencies come from --------------------------------------------------------------
site=${FASTFASHION_SITE:-}
if [ -n "${FASTFASHION_PACK:-}" ]; then
  site=$work/site
  # shellcheck disable=SC2016
  step unpack 60 bash -c 'mkdir -p "$1" && cat "$2"/part-* | xz -d | tar -x -C "$1"' _ "$site" "$FASTFASHION_PACK"
fi
export PYTHONPATH="$repo${site:+:$site}${PYTHONPATH:+:$PYTHONPATH}"
for lib in "${site:-/nonexistent}"/nvidia/cu*/lib; do  # CUDA libraries shipped in the pack
  [ -d "$lib" ] && export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
export TQDM_DISABLE=1

# --- sizes and devices: fixed, the GPU run's or the dry run's -------------------------------------------------------
if [ "$dry" -eq 1 ]; then
  mode="dry run (CPU, dali-cpu)"; dev=cpu; dali=dali-cpu
  n_train=48; n_eval=16; size=32; bs=8
  bench_args=(--backends seed,torch,dali-cpu,dali-gpu --rounds 1 --batches 2 --warmup 1 --train-steps 1 --workers 1)
  train_args=(--max-steps 4); fast_args=(--epochs 1 --max-steps 2 --image-size 32 --batch-size 8)
  cache_args=(--epochs 2 --device cpu)
  uint8_args=(--device cpu --backends dali-cpu --rounds 1 --batches 2 --warmup 1 --workers 1)
  tests='tests/test_gpu_path.py -m "not gpu and not long" -k "train_graph or label_members"'
else
  mode="GPU"; dev=cuda; dali=dali-gpu
  n_train=2000; n_eval=400; size=128; bs=64
  bench_args=(--backends seed,torch,dali-cpu,dali-gpu --rounds 3 --batches 20 --warmup 3 --train-steps 20
              --workers 8)
  train_args=(--max-steps 40); fast_args=(--image-size 112)
  cache_args=(--epochs 3)
  uint8_args=(--device cuda --backends dali-gpu,dali-cpu,torch --rounds 3 --batches 20 --warmup 3 --workers 8)
  tests='tests -m gpu'
fi
tests=${GPU_CHECK_TESTS:-$tests}
ff=("$py" -m fastfashion -q)
[ -n "${FASTFASHION_REAL_DATA:-}" ] && GPU_CHECK_SKIP="${GPU_CHECK_SKIP:-} synth"  # the real set instead

step env 30 "$py" "$repo/benchmarks/gpu_summary.py" env --device "$dev" --json "$logs/env.json"
step synth 40 "${ff[@]}" synth "$work/data" --train "$n_train" --val "$n_eval" --test "$n_eval"
data=${FASTFASHION_REAL_DATA:-$work/data}
step shard 30 "${ff[@]}" shard "$data" "$work/shards"
shards=$work/shards
step tests 100 bash -c "\"\$0\" -m pytest -q -p no:cacheprovider $tests" "$py"  # the selection: a command line
step bench 90 "${ff[@]}" bench --shards "$shards" --source "$data" "${bench_args[@]}" --batch-size "$bs" \
  --image-size "$size" --json "$logs/bench.json" --png "$logs/bench.png"
step dali 10 "$py" "$repo/benchmarks/gpu_summary.py" dali "$logs/bench.json" --backend "$dali"
step uint8 40 "$py" "$repo/benchmarks/uint8.py" "$shards" --source "$data" "${uint8_args[@]}" --batch-size "$bs" \
  --image-size "$size" --json "$logs/uint8.json"
step cache 30 "$py" "$repo/benchmarks/gpu_cache.py" "$shards" "${cache_args[@]}" --batch-size "$bs" \
  --image-size "$size" --json "$logs/gpu_cache.json"
run=(--shards "$shards" --image-size "$size" --batch-size "$bs" --device "$dev" --backend "$dali")
step train 40 "${ff[@]}" train "${run[@]}" --out "$work/run" --epochs 2 "${train_args[@]}"
step resume 30 "${ff[@]}" train "${run[@]}" --out "$work/run" --epochs 3 --resume
cp "$work/run/metrics.json" "$logs/train_metrics.json" 2>/dev/null
step evaluate 20 "${ff[@]}" evaluate --shards "$shards" --checkpoint "$work/run/last.pt" --device "$dev" \
  --backend "$dali" --batch-size "$bs" --json
step predict 20 "${ff[@]}" predict --shards "$shards" --checkpoint "$work/run/last.pt" --device "$dev" \
  --backend "$dali" --batch-size "$bs" --out "$logs/prediction.txt"
step ddp 50 env FASTFASHION_DIST_BACKEND=gloo OMP_NUM_THREADS=1 "$py" -m torch.distributed.run --standalone \
  --nproc_per_node=2 -m fastfashion -q train "${run[@]}" --out "$work/ddp" --epochs 1
cp "$work/ddp/metrics.json" "$logs/ddp_metrics.json" 2>/dev/null
step fast 80 "${ff[@]}" train --recipe fast --shards "$shards" --out "$work/fast" --device "$dev" \
  --backend "$dali" "${fast_args[@]}"
cp "$work/fast/metrics.json" "$logs/fast_metrics.json" 2>/dev/null

# --- one archive, one summary --------------------------------------------------------------------------------------
failed_list="${failed[*]:-}"
"$py" "$repo/benchmarks/gpu_summary.py" summary "$logs" --mode "$mode" --failed "$failed_list" \
  > "$res/summary.txt" 2> "$logs/summary.err" || { failed+=("summary"); cat "$logs/summary.err"; }
tar -czf "$res/gpu_check.tar.gz" -C "$logs" . || failed+=("archive")
cat "$res/summary.txt"
say "wall $(($(date +%s) - t_start)) s; results: $res/gpu_check.tar.gz and $res/summary.txt"
if [ "${#failed[@]}" -gt 0 ]; then
  say "FAILED steps: ${failed[*]}"
  exit 1
fi
say "all steps passed"
exit 0
