#!/usr/bin/env bash
# Runs bench/gpu_batching_probe.py on a GPU for a few TF Serving batching configurations and
# writes one folder of JSON per configuration plus summary.md under $OUT (docs/gpu-batching.md):
#   control  max_batch_size 32, batch_timeout_micros 2000 (services/tf-serving/config/
#            batching_parameters.txt as it is)
#   mb16     max_batch_size 16, 2000 us         mb64    max_batch_size 64, 2000 us
#   to500    max_batch_size 32, 500 us          to5000  max_batch_size 32, 5000 us
# Allowed sizes double from 1 up to the max batch size; max_enqueued_batches stays 64. Every
# configuration is offered the same absolute load: fractions of the control's back-to-back
# capacity at batch 32 (--capacity-img-s), so "0.8" is the same images/s in every table.
#   OUT=/tmp/sweep PYTHONUNBUFFERED=1 bash bench/gpu_batching_sweep.sh 2>&1 | tee /tmp/sweep/log
# Needs python3 with torch, timm and nvidia-ml-py on an NVIDIA GPU; DRY=1 runs the CPU
# stand-in (PY=.venv/bin/python). Sized to finish in about 5 minutes on an H200: 9 steps of
# 3 s per configuration plus each process's model set-up; past BUDGET_S (default 330 s)
# the remaining configurations are skipped, so what finished still comes back.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:?set OUT to the folder for the results}
py=${PY:-python3}
budget=${BUDGET_S:-330}
fractions=${FRACTIONS:-0.1,0.3,0.5,0.7,0.8,0.85,0.9,1.0,1.2}
step_s=${STEP_S:-3}
dry=()
[[ ${DRY:-0} == 1 ]] && dry=(--dry)
export PYTHONUNBUFFERED=1
mkdir -p "$out"
start=$(date +%s)

run() {  # name max_batch timeout_us allowed [extra probe args...]
  local name=$1 mb=$2 to=$3 allowed=$4
  shift 4
  local elapsed=$(($(date +%s) - start))
  if ((elapsed > budget)); then
    echo "=== $name: skipped, ${elapsed} s elapsed of ${budget} s"
    return 0
  fi
  echo "=== $name: max_batch_size $mb, batch_timeout_micros $to, allowed $allowed (t=${elapsed} s)"
  local t0
  t0=$(date +%s)
  "$py" bench/gpu_batching_probe.py "${dry[@]}" --max-batch-size "$mb" \
    --batch-timeout-us "$to" --allowed-batch-sizes "$allowed" --max-enqueued-batches 64 \
    --fractions "$fractions" --step-s "$step_s" --out "$out/$name" "$@" ||
    echo "=== $name: FAILED (exit $?)"
  echo "=== $name: $(($(date +%s) - t0)) s"
}

run control 32 2000 1,2,4,8,16,32
capacity=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["capacity_img_per_s"])' \
  "$out/control/batching_probe.json" || true)
cap=()
if [[ -n $capacity ]]; then
  cap=(--capacity-img-s "$capacity")
  echo "=== reference capacity (control, batch 32 back to back): $capacity img/s"
else
  echo "=== no control result: each configuration runs at fractions of its own capacity"
fi
run mb64 64 2000 1,2,4,8,16,32,64 "${cap[@]}"
run to5000 32 5000 1,2,4,8,16,32 "${cap[@]}"
run to500 32 500 1,2,4,8,16,32 "${cap[@]}"
run mb16 16 2000 1,2,4,8,16 "${cap[@]}"
echo "=== sweep wall time: $(($(date +%s) - start)) s"

# One markdown table per configuration that finished, as docs/gpu-batching.md shows them.
"$py" - "$out" <<'EOF' | tee "$out/summary.md"
import json, os, sys

out = sys.argv[1]
for name in ("control", "mb16", "mb64", "to500", "to5000"):
    path = os.path.join(out, name, "batching_probe.json")
    if not os.path.exists(path):
        print(f"### {name}: no result\n")
        continue
    r = json.load(open(path))
    b = r["batching"]
    sizes = ", ".join(f"{s['size']}: {s['wall_ms']} ms" for s in r["sweep"])
    print(f"### {name}: max_batch_size {b['max_batch_size']}, batch_timeout_micros "
          f"{b['batch_timeout_us']}\n\n{r['engine']}; setup {r['setup_s']} s; "
          f"back to back {sizes}; own capacity {r['own_capacity_img_per_s']} img/s; "
          f"fractions x {r['capacity_img_per_s']} img/s\n")
    print("| load | offered/s | served/s | p50 ms | p99 ms | mean batch | busy % | util % "
          "| refused |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for s in r["steps"]:
        print(f"| {s['fraction']} | {s['offered_per_s']} | {s['served_per_s']} | {s['p50_ms']} "
              f"| {s['p99_ms']} | {s['mean_batch']} | {s['kernel_busy_pct']} "
              f"| {s['nvml_util_pct']} | {s['refused']} |")
    print()
EOF
