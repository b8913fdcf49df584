#!/usr/bin/env bash
# The reference runs behind results/, as run on one H200 (calls of at most 10 minutes, no network).
#   RAW=folder-with-raw-data bash scripts/reference_runs.sh STAGE [MINUTES]
# RAW holds ag_news/test.csv (or ag_news_csv/) and wikitext-2/wiki.*.tokens. Stages write run folders
# under results/ (results.json is committed; checkpoints are git-ignored) and can be re-run: complete
# runs are skipped and unfinished ones resume from their checkpoints. With $OUT set (the lent GPU),
# the results are packed into $OUT/results-STAGE.tgz; unpack it here with `tar xzf FILE`.
set -euo pipefail
stage=${1:?stage: grids-x4 | classification | needle-long | lm | lm-seeds | mqar | lm-x4 | ddp | kernel-e2e | kernel | bench}
# lm-x4 reads GPUS (default 0,1,2,3) and PARALLEL (runs at once, default 8)
minutes=${2:-9}
export MINIMIPT_DATA=${MINIMIPT_DATA:-/tmp/minimipt-data} PYTHONUNBUFFERED=1
mkdir -p "$MINIMIPT_DATA"
# The device tool returns only a few shallow files from $OUT: pack the run folders (no checkpoints),
# also when a stage fails part-way
pack() {
  if [ -n "${OUT:-}" ]; then
    tar czf "$OUT/results-$stage.tgz" --exclude='*.pt' results && echo "packed $OUT/results-$stage.tgz"
  fi
}
trap pack EXIT
case "$stage" in
  grids-x4)
    # every training grid at once on a 4-GPU machine (nvidia-h200-x4): AG News on GPUs 0-1,
    # needle-512 on 2, the language models and needle-long on 3
    python -m minimipt data prepare ag_news-offline --from "${RAW:?}" --quiet &
    python -m minimipt data prepare wikitext-2 --from "${RAW:?}" --quiet
    wait
    python -m minimipt.course.experiments ag_news-offline --gpus 0,1 --parallel 12 --max-minutes "$minutes" &
    python -m minimipt.course.experiments needle-512 --gpus 2 --parallel 11 --max-minutes "$minutes" &
    python -m minimipt.course.experiments needle-long --gpus 3 --parallel 9 --max-minutes "$minutes" &
    python -m minimipt.course.experiments wikitext-2-offline --gpus 3 --parallel 4 --max-minutes "$minutes" || true
    wait
    ;;
  classification)
    # tokenize once before the parallel runs read the prepared arrays
    python -m minimipt data prepare ag_news-offline --from "${RAW:?}" --quiet
    python -m minimipt.course.experiments needle-512 --parallel 10 --max-minutes "$minutes" &
    python -m minimipt.course.experiments ag_news-offline --parallel 12 --max-minutes "$minutes"
    wait
    ;;
  needle-long)
    python -m minimipt.course.experiments needle-long --parallel 9 --max-minutes "$minutes"
    ;;
  lm)
    python -m minimipt data prepare wikitext-2 --from "${RAW:?}" --quiet
    python -m minimipt.course.experiments wikitext-2-offline --parallel 4 --max-minutes "$minutes"
    ;;
  lm-seeds)
    # the four language models, 3 seeds each, on the 500-step schedule (wikitext-2-3seeds-500steps):
    # twelve runs share the GPU, the cached ones set the pace (about 6 minutes on one H200)
    python -m minimipt data prepare wikitext-2 --from "${RAW:?}" --quiet
    python -m minimipt.course.experiments wikitext-2-3seeds-500steps --parallel 12 --max-minutes "$minutes"
    ;;
  mqar)
    # multi-query associative recall: sequence length x key-value pairs x model x learning rate (generated
    # data, nothing to prepare); PARALLEL runs share the GPU (default 12); the runs go in the grid's order
    # of priority: the sweep at L = 128 with 8 pairs, then L = 512 (8, 32, 128 pairs), then L = 128 with 32 pairs
    python -m minimipt.course.experiments mqar --parallel "${PARALLEL:-12}" --max-minutes "$minutes"
    ;;
  ddp)
    # the LM for a fixed number of steps on 1 GPU and on 2 GPUs (same per-GPU batch of 32 windows)
    python -m minimipt data prepare wikitext-2 --from "${RAW:?}" --quiet
    common=(wikitext --preset offline --model mipt --quiet --set "max_steps=${STEPS:-150}"
            --set eval_every=100000 --set ckpt_every=100000 --set eval_batches=4)
    python -m minimipt train "${common[@]}" --set batch_size=32 --out results/ddp/1gpu
    torchrun --standalone --nproc_per_node=2 -m minimipt train "${common[@]}" --set batch_size=64 --out results/ddp/2gpu
    ;;
  kernel-e2e)
    # end-to-end effect of the Triton scan: the same LM training with the kernel and with "chunked"
    python -m minimipt data prepare wikitext-2 --from "${RAW:?}" --quiet
    for method in triton chunked; do
      python -m minimipt train wikitext --preset offline --model mipt --quiet --set "max_steps=${STEPS:-120}" \
        --set eval_every=100000 --set ckpt_every=100000 --set eval_batches=2 --set "scan_method=\"$method\"" \
        --out "results/kernel-e2e/$method"
    done
    ;;
  bench)
    # alone on the GPU (timings): every GPU test, the entry check, length scaling (training with the HGRN
    # peer, whose wheels fla-core and flash-linear-attention 0.6.0 must be importable: pip install
    # ".[bench]"; decoding with the captured step), the cache's pieces, time to first token and decoding
    python -m pytest -o addopts="" -p no:cacheprovider -m gpu -q -rs tests > results/bench/gpu_tests_h200.txt 2>&1 \
      || echo "GPU tests failed: see results/bench/gpu_tests_h200.txt"
    python -m minimipt.bench entry --out results/bench/entry_h200.json
    python -m minimipt.bench scaling --models mipt,mipt-K64,mipt-K64-blocked,sdpa,naive,hgrn --cuda-graphs \
      --decode-modes graph,compile --out results/bench/scaling_h200.json
    python -m minimipt.bench cache --sweep --out results/bench/cache_h200.json
    python -m minimipt.bench generate --out results/bench/generate_h200.json
    ;;
  kernel)
    # the GPU tests, then the scan benchmark: a small explicit sweep of the kernels' configurations at the
    # first shape, then every method at the default configurations, "chunked" also at C = 32 and 64.
    # The peer rows need accelerated-scan 0.3.1
    # importable (carry its wheel: pip install --no-deps --target /tmp/site accelerated_scan-0.3.1-py3-none-any.whl)
    python -m pytest -o addopts="" -p no:cacheprovider -m gpu \
      tests/ops/triton/test_scan.py tests/ops/triton/test_mixer.py tests/ops/test_triton.py -q -rs \
      > results/bench/gpu_tests_h200.txt 2>&1 || echo "GPU tests failed: see results/bench/gpu_tests_h200.txt"
    python -m minimipt.bench scan --sweep --chunks 32,64 --out results/bench/scan_h200.json
    ;;
  lm-x4)
    # the language-model grid spread over the GPUs in $GPUS (default 0,1,2,3: nvidia-h200-x4)
    python -m minimipt data prepare wikitext-2 --from "${RAW:?}" --quiet
    python -m minimipt.course.experiments wikitext-2-offline --gpus "${GPUS:-0,1,2,3}" --parallel "${PARALLEL:-8}" --max-minutes "$minutes"
    ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
esac
