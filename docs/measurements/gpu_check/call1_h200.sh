#!/usr/bin/env bash
# The GPU check on the lent H200 (this session's wrapper around scripts/gpu_check.sh's steps; no notebooks part:
# the jupyter stack and FM would not fit the 64 MiB transfer together).
set -uo pipefail
T0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 UNIIL_DATA=$PWD/.gpudata/data UNIIL_CACHE=/tmp/uc PYTHONUNBUFFERED=1
D=$OUT/gpu_check; mkdir -p $D /tmp/gc
echo "install $(( $(date +%s) - T0 )) s"
nvidia-smi --query-gpu=name,memory.total,compute_cap,driver_version --format=csv | tee $D/gpu.txt
python3 -c "import torch, open_clip, timm, sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda, open_clip.__version__, timm.__version__, torch.cuda.get_device_name(0))" | tee -a $D/gpu.txt
python3 benchmarks/gpu_check.py prepare --out /tmp/gc || exit 4
echo "prepared $(( $(date +%s) - T0 )) s"
# the scenario's features cache once, then four groups of methods side by side on the one GPU
G1=zeroshot,finetune,linear-probe,adapter,lowrank-seq
G2=moe-adapters,moe-adapters-ddas,moe-adapters-balance,moe-adapters-ddas-balance,moe-adapters-cil
G3=mage,mage-noattr,mage-randwords,mage-imagefeat,mage-shared
G4=awpf-fixed,awpf,awpf-mmd-only,awpf-lda-only
i=0
for G in $G1 $G2 $G3 $G4; do i=$((i+1));
  timeout ${LIMIT:-380} python3 -m uniil_lib benchmark --scenario uniil-offline --methods $G --profile /tmp/gc/gpu-check-profile.json --out $D/benchmark-g$i.json --quiet > $D/benchmark-g$i.log 2>&1 &
  sleep 2
done
wait
echo "benchmarks done $(( $(date +%s) - T0 )) s"
for i in 1 2 3 4; do echo "== g$i"; tail -5 $D/benchmark-g$i.log; done
python3 - <<'PY'
import json, os, glob
d = os.environ["OUT"] + "/gpu_check"
merged = None
for f in sorted(glob.glob(d + "/benchmark-g*.json")):
    r = json.load(open(f))
    if merged is None: merged = r
    else: merged["methods"].update(r["methods"])
if merged:
    json.dump(merged, open(d + "/benchmark.json", "w"), indent=1)
    for n, m in merged["methods"].items():
        print(n, m.get("device"), m.get("precision"), {k: round(v, 3) for k, v in m.get("metrics", {}).items() if isinstance(v, (int, float))})
PY
python3 benchmarks/gpu_check.py summarise --out $D | tee $D/step_times.txt
nvidia-smi --query-gpu=memory.used --format=csv >> $D/gpu.txt
echo "total $(( $(date +%s) - T0 )) s" | tee $D/total.txt
