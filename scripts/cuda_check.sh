#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: the CUDA tests (tests/test_cuda.py, skipped elsewhere), then the GPU benchmarks
# (training and populations on cuda; studies as commands, which train where `auto` puts them: on the GPU).
# Each step is bounded in time and writes its output to ${OUT:-cuda-check}/ as it goes: machine.txt, tests.txt,
# sizes.txt, overhead.txt, training.txt, studies.txt, and RESULTS.md (the benchmark tables, for benchmarks/RESULTS.md).
# CUDA_CHECK_ONLY="tests training" runs only those steps; CUDA_CHECK_<STEP>_S sets a step's time limit. On an H200
# (2026-12-04) the steps took 9, 61, 31, 23, 72 and 108 s: the limits below, about twice that, add up to 590 s, so
# the whole script fits one 600-s device call.
# Lossboard's requirements must be importable by python3 (`pip install torch==2.13.0` on Linux brings the CUDA
# build).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-cuda-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
only=" ${CUDA_CHECK_ONLY:-machine tests sizes overhead training studies} "  # the steps to run
step() {  # step NAME SECONDS COMMAND...: run it, its output to the terminal and to $out/NAME.txt
  local name=$1 limit=$2; shift 2
  [[ $only == *" $name "* ]] || return 0
  echo "=== $name (at most ${limit} s): $*" | tee "$out/$name.txt"
  local began=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$out/$name.txt"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - began)) s" | tee -a "$out/$name.txt"
}
step machine 30 bash -c 'nvidia-smi; python3 -c "import torch, sqlalchemy, alembic; print(torch.__version__, torch.version.cuda, torch.cuda.is_available(), torch.cuda.get_device_name())"'
step tests "${CUDA_CHECK_TESTS_S:-120}" python3 -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py
# population sizes first: the issue's GPU figure (1,000 members against sequential training)
step sizes "${CUDA_CHECK_SIZES_S:-90}" python3 benchmarks/population.py --device cuda --only sizes --repeats 2 \
  --out "$out/RESULTS.md"
step overhead "${CUDA_CHECK_OVERHEAD_S:-60}" python3 benchmarks/population.py --device cuda --only overhead \
  --repeats 2 --out "$out/RESULTS.md"
step training "${CUDA_CHECK_TRAINING_S:-120}" python3 benchmarks/bench.py --device cuda --only training \
  --training-repeats 4 --out "$out/RESULTS.md"
step studies "${CUDA_CHECK_STUDIES_S:-170}" python3 benchmarks/population.py --only studies --repeats 1 \
  --out "$out/RESULTS.md"
