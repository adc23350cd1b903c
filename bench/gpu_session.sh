#!/bin/bash
# One lent GPU session's work (issues #15 and #14), as a single prepared script for the device
# tool (docs/benchmarks.md, "GPU"): #15 re-measured (training batches from threads against
# worker processes; a large photo and a folder, with the photos' own work on one thread and on
# several), then #14's cross-validation of models/recipe.gpu.json, two folds at a time, for the
# time left. Results and logs go to $OUT.
#
# Before, on this machine: copy ../shared/data/{masonry,deepcrack}/train to
# data/gpu/{masonry,deepcrack}/train (ignored by git; 51 MB) and the keras, namex and optree
# wheels for cp312 to .whl/ (ignored), then smoke-test it here:
#   PATH=.venv/bin:$PATH QUICK=1 OUT=/tmp/x bash bench/gpu_session.sh
# On the device (carry .whl and data/gpu):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \
#   PYTHONPATH=/tmp/site bash bench/gpu_session.sh
set -u
T0=$SECONDS
OUT=${OUT:-/tmp/gpuout3}; mkdir -p $OUT
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
log() { echo "[$((SECONDS-T0))s] $*"; }
if [ "${QUICK:-0}" = 1 ]; then PQ=--quick; ST=3; END=${END:-200}; else PQ=; ST=150; END=${END:-560}; fi
[ "${SKIP_BENCH:-0}" = 1 ] || {
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null; df -h /dev/shm; nproc
log "bench_train 256/8"
timeout 150 python3 bench/bench_train.py --preset standard --size 256 --batch 8 --steps $ST --data data/gpu/deepcrack $PQ
log "bench_train 384/16"
timeout 150 python3 bench/bench_train.py --preset standard --size 384 --batch 16 --steps $((ST * 2 / 3)) --data data/gpu/deepcrack $PQ
log "bench_passes 2,3"
timeout 110 python3 bench/bench_passes.py --parts 2,3 $PQ
log "benches done"
} 2>&1 | grep -v "^\s*$\|cudart_stub\|absl::" | tee $OUT/bench.txt
python3 - <<PY
import json
d = json.load(open("models/recipe.gpu.json"))
d["data"] = ["data/gpu/masonry", "data/gpu/deepcrack"]
if "${QUICK:-0}" == "1":
    d.update(size=64, batch=2, steps_per_epoch=2, epochs=1, preset="tiny", mixed_precision=False)
json.dump(d, open("/tmp/recipe3.json", "w"))
PY
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.35
for pair in "1 2" "3 4" "5"; do
  REM=$((END - (SECONDS - T0)))
  [ $REM -gt 290 ] || [ "${QUICK:-0}" = 1 -a $REM -gt 30 ] || { log "no time left for folds $pair" | tee -a $OUT/bench.txt; break; }
  log "crossval folds $pair ($REM s left)" | tee -a $OUT/bench.txt
  for k in $pair; do
    timeout $REM python3 -m unet crossval --config /tmp/recipe3.json --folds 5 --only $k --runs-dir runs/gpu > $OUT/fold$k.log 2>&1 &
  done
  wait
  [ "${QUICK:-0}" = 1 ] && break
done
cp runs/gpu/crossval-*.json $OUT/ 2>/dev/null
log "done" | tee -a $OUT/bench.txt
ls -la $OUT
