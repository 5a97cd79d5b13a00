#!/usr/bin/env bash
# The CUDA checks in one call, for a GPU machine lent for a few minutes with no network.
#
#   bash benchmarks/gpu_check.sh OUT SOURCE_FOLDER...
#
# Each SOURCE_FOLDER holds a model's config.json and tokenizer files (a converted bundled model
# in the harness cache has them; the weights need not travel): a random-weight copy of each is
# built (benchmarks/random_model.py), which costs the same arithmetic per token. Then, in
# bfloat16 on the GPU: bench_score and bench_capture on the first model, the batch-size search
# under a memory cap, bench_score's score calls on the others, weekday_circle with and without
# --device-map auto (their metrics compared), and every task but language_neurons (its language
# identifier is a 170 MB wheel) under --preset quick, with each task's time and phases. Each step
# has its own time limit, so one slow step cannot eat the others; everything goes to OUT/log.
# STEPS (default "score capture search others tasks") picks some of them. The harness must be
# installed (its tasks are entry points): pip install -e . (or a wheel of it, --no-deps).
set -uo pipefail
steps=" ${STEPS:-score capture search others tasks} "
want() { [[ $steps == *" $1 "* ]]; }
out=$1; shift
mkdir -p "$out" /tmp/models
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
log="$out/log"
step() { local limit=$1; shift; echo "== $* (limit ${limit}s)" | tee -a "$log"; local t0=$SECONDS
         timeout "$limit" "$@" 2>&1 | grep -v -E "Loading weights|Writing model shards|it/s\]" | tee -a "$log"
         echo "== rc ${PIPESTATUS[0]} in $((SECONDS - t0)) s" | tee -a "$log"; }
nvidia-smi -L | tee -a "$log"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$log"
models=()
for src in "$@"; do
  name=/tmp/models/$(basename "$src")-random
  step 90 python3 -m benchmarks.random_model "$src" "$name"
  models+=("$name")
done
first=${models[0]}
want score && step 100 python3 -m benchmarks.bench_score --model "$first" --repeat 3
want capture && step 60 python3 -m benchmarks.bench_capture --model "$first" --repeat 3
want search && step 90 python3 -m benchmarks.bench_search --model "$first" --cap-gib 3 --repeat 2 --n 128
want others && for m in "${models[@]:1}"; do step 60 python3 -m benchmarks.bench_score --model "$m" --repeat 3 --calls score,targets,batch; done
want tasks || exit 0
step 60 python3 -m harness.cli run --model "$first" --task weekday_circle --preset quick --no-progress --output-dir "$out/plain"
step 60 python3 -m harness.cli run --model "$first" --task weekday_circle --preset quick --no-progress --device-map auto \
  --output-dir "$out/mapped"
python3 - "$out" <<'PY' 2>&1 | tee -a "$log"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
runs = {k: json.loads(next((out / k).rglob("weekday_circle*.json")).read_text()) for k in ("plain", "mapped")}
a, b = runs["plain"]["metrics"], runs["mapped"]["metrics"]
same = [k for k in a if a[k] == b.get(k)]
print(f"weekday_circle, --device-map auto vs plain cuda: {len(same)} of {len(a)} metrics identical;",
      "devices", runs["plain"]["model"].get("device"), "/", runs["mapped"]["model"].get("device"))
PY
tasks=$(python3 -c "from harness.registry import all_tasks; print(' '.join(f'--task {t}' for t in sorted(all_tasks()) if t != 'language_neurons'))")
step 150 python3 -m harness.cli run --model "$first" $tasks --preset quick --no-progress --output-dir "$out/all"
python3 - "$out/all" <<'PY' 2>&1 | tee -a "$log"
import json, sys
from pathlib import Path
for path in sorted(Path(sys.argv[1]).rglob("*.json")):
    if path.parent.parent != Path(sys.argv[1]):
        continue
    d = json.loads(path.read_text())
    t = d.get("timing", {})
    phases = ", ".join(f"{k} {v:.1f}" for k, v in sorted(t.get("phases", {}).items(), key=lambda kv: -kv[1])[:3])
    print(f"{d['task']['name'] if isinstance(d.get('task'), dict) else d.get('task')}: {t.get('seconds_total')} s; {phases}")
PY
tar -czf "$out/results.tgz" -C "$out" plain mapped all 2>/dev/null
rm -rf "$out/plain" "$out/mapped" "$out/all"
