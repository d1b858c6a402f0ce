#!/usr/bin/env bash
# One device-machine session: GPU tests, throughput, the suite, timed runs on the GPU.
#
# Runs where the project's Python packages are not installed: it unpacks the ones the image lacks
# (polars, faiss-cpu, pydantic, packed as .whl/site.tar.xz by bench/gpu_pack.sh) and uses
# the image's own torch and Lightning. Serving tests need Ray, too large to carry; they are left out.
#     STEPS="tests throughput embed suite run20k workers20k buckets20k goal20k heldout" bash bench/gpu_session.sh
# Issue 27's GPU embedding check alone (about 4 minutes): STEPS="tests embed" bash bench/gpu_session.sh
# Logs go under $OUT (./gpu_out without it).
set -u
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
STEPS=${STEPS:-"tests throughput"}
SITE=/tmp/site
[ -d $SITE/polars ] || { mkdir -p $SITE && tar -C $SITE -xJf .whl/site.tar.xz; } || exit 1
export PYTHONPATH=$SITE:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, lightning, polars, faiss; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'lightning', lightning.__version__, 'polars', polars.__version__, 'faiss', faiss.__version__)" | tee -a "$OUT/gpu.txt"
has() { [[ " $STEPS " == *" $1 "* ]]; }
step() { echo "=== $1 ($(date -u +%H:%M:%S))"; }
synth20k() { [ -f /tmp/s20k/events.parquet ] || python3 -m seqcohort synth --users 20000 --out /tmp/s20k > /dev/null; }
run20k() {  # $1: log name, rest: --set overrides
  local name=$1; shift
  synth20k
  local t0=$(date +%s)
  timeout 300 python3 -m seqcohort run --events /tmp/s20k/events.parquet --workspace "/tmp/ws_$name" "$@" \
    > "$OUT/$name.log" 2>&1
  echo "rc=$? wall=$(( $(date +%s) - t0 )) s" | tee -a "$OUT/$name.log"
  grep -iE "train|embed|cluster|name|cohorts|users" "$OUT/$name.log" | grep -v "^\s*$" | tail -6
}
if has tests; then
  step "gpu tests"
  timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log" | tail -4
fi
if has throughput; then
  step "throughput"
  timeout 240 python3 bench/embed_throughput.py --users "${USERS:-8000}" --record 2>&1 | tee "$OUT/throughput.log" | tail -12
  cp bench/RESULTS.md "$OUT/RESULTS.md"
fi
if has embed; then  # issue 27: batch embedding on the GPU, 128 events a user, bf16 and float32, vs the CPU's vectors
  step "embedding throughput on the GPU, ${EMBED_USERS:-100000} users"
  timeout 500 python3 bench/embed_throughput.py --users "${EMBED_USERS:-100000}" --devices cuda --no-train \
    --repeat 3 --record 2>&1 | tee "$OUT/embed.log" | tail -20
  cp bench/LOG.md "$OUT/LOG.md"
fi
if has suite; then
  step "test suite on the GPU machine (serving left out)"
  timeout 420 python3 -m pytest -q -p no:cacheprovider -n 8 --ignore tests/test_serving.py \
    --ignore tests/test_serve_cmd.py 2>&1 | tee "$OUT/suite.log" | tail -12
fi
if has run20k; then step "seqcohort run, 20,000 synthetic users"; run20k run20k; fi
if has workers20k; then step "the same, trainer.num_workers=6"; run20k workers20k --set trainer.num_workers=6; fi
if has buckets20k; then
  step "trainer.length_buckets=1 and 2 (fewer, longer-padded passes per step)"
  run20k buckets1 --set trainer.length_buckets=1
  run20k buckets2 --set trainer.length_buckets=2
fi
if has goal20k; then
  step "goal-aware, trainer.num_workers=6"
  run20k goal20k --goal purchase --horizon 30d --set trainer.num_workers=6
fi
if has heldout; then
  step "held-out archetypes, 3,000 users, seed 11"
  timeout 300 python3 bench/heldout_archetypes.py --users 3000 --seed 11 2>&1 | tee "$OUT/heldout.log" | tail -16
fi
step "done"
