#!/usr/bin/env bash
# Held-out archetype recovery for several configs and data seeds at once, in parallel processes
# (meant for the GPU machine, where one run leaves the GPU mostly idle). Each line of GRID is
# "NAME OVERRIDE..."; every config runs on every seed in SEEDS. Prints one summary row per run.
#     GRID=$'base\nwide model.d_model=128 model.d_ff=256' SEEDS="11 12" bash bench/heldout_grid.sh
# Needs the packages bench/gpu_session.sh sets up (PYTHONPATH) where the project is not installed.
set -u
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
SEEDS=${SEEDS:-"11 12"}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PYTHONUNBUFFERED=1
pids=()
while read -r name overrides; do
  [ -z "$name" ] && continue
  sets=(); for o in $overrides; do sets+=(--set "$o"); done
  for seed in $SEEDS; do
    timeout "${LIMIT:-480}" python3 bench/heldout_archetypes.py --users 3000 --seed "$seed" "${sets[@]}" \
      > "$OUT/grid_${name}_$seed.log" 2>&1 &
    pids+=($!)
  done
done <<< "$GRID"
wait "${pids[@]}"
printf "%-12s %-5s %s\n" config seed "| method | ARI | ARI 4+ | short | twins..."
for f in "$OUT"/grid_*.log; do
  b=$(basename "$f" .log); b=${b#grid_}
  row=$(grep -m1 "^| seqcohort" "$f" || echo "(no result: $(tail -1 "$f"))")
  secs=$(grep -o "pipeline [0-9]*s, [0-9]* cohorts" "$f" | head -1)
  printf "%-12s %-5s %s  %s\n" "${b%_*}" "${b##*_}" "$row" "$secs"
done
