#!/usr/bin/env bash
# One GPU call for the fused cache path, mipt_scan's entry check and the HGRN peer (at most 7.8 minutes
# on one H200: each step has its own time limit, 460 s in all, and a failed step does not stop the next):
#   1. the GPU tests of the fused cache and of mipt_scan's inputs (pytest -m gpu, three files)
#   2. python -m minimipt.bench scaling --cuda-graphs, models mipt, mipt-K64, mipt-K64-blocked, sdpa,
#      naive, hgrn -> results/bench/scaling_h200.json
#   3. python -m minimipt.bench cache --sweep   (the cache's pieces per layer, launch configurations)
#   4. python -m minimipt.bench entry           (mipt_scan's defaults against the raw kernel)
# flash-linear-attention for the hgrn row: put its wheels (fla_core-0.6.0, flash_linear_attention-0.6.0
# and einops, all pure Python) in .whl/; they are installed into /tmp/fla-site, not into the environment.
# MINIMIPT_SMOKE=1 runs the same steps at tiny sizes, writing to $TMPDIR/cache_gpu_smoke (on a CPU:
# the GPU tests skip, the kernels' rows too). With $OUT set (the lent GPU), results/bench/cache_gpu_* and the JSON files are packed into
# $OUT/cache_gpu.tgz, also when a step fails or the call is cut short; unpack with `tar xzf`.
set -uo pipefail
export PYTHONUNBUFFERED=1
hw=${HW:-h200}
dir=results/bench
if [ -n "${MINIMIPT_SMOKE:-}" ]; then hw=smoke; dir=${TMPDIR:-/tmp}/cache_gpu_smoke; fi
mkdir -p "$dir"
files=("$dir/cache_gpu_${hw}_status.txt")
pack() {
  if [ -n "${OUT:-}" ]; then
    tar czf "$OUT/cache_gpu.tgz" "${files[@]}" 2>/dev/null && echo "packed $OUT/cache_gpu.tgz"
  fi
}
trap pack EXIT
: > "$dir/cache_gpu_${hw}_status.txt"
step() {  # step NAME SECONDS command...: stdout+stderr to a log, exit status to the status file
  local name=$1 limit=$2
  shift 2
  local log="$dir/cache_gpu_${hw}_${name}.txt"
  files+=("$log")
  local t0=$SECONDS
  timeout "$limit" "$@" > "$log" 2>&1
  local rc=$?
  echo "$name: exit $rc after $((SECONDS - t0)) s (limit $limit s)" | tee -a "$dir/cache_gpu_${hw}_status.txt"
}
if compgen -G ".whl/*.whl" > /dev/null; then
  python -m pip install --no-deps --no-index --target /tmp/fla-site .whl/*.whl -q \
    && export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}/tmp/fla-site"
fi
python -c "import fla.models; print('ok')" 2>&1 | tail -1 | sed 's/^/fla import: /' | tee -a "$dir/cache_gpu_${hw}_status.txt"

step tests 170 python -m pytest -o addopts="" -p no:cacheprovider -m gpu -q -rs \
  tests/ops/triton/test_cache_attention.py tests/ops/test_checks.py tests/ops/test_scan.py
files+=("$dir/scaling_$hw.json" "$dir/cache_$hw.json" "$dir/entry_$hw.json")
step scaling 200 python -m minimipt.bench scaling --cuda-graphs \
  --models mipt,mipt-K64,mipt-K64-blocked,sdpa,naive,hgrn --out "$dir/scaling_$hw.json"
step cache 60 python -m minimipt.bench cache --sweep --out "$dir/cache_$hw.json"
step entry 30 python -m minimipt.bench entry --out "$dir/entry_$hw.json"
