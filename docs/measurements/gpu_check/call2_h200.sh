#!/usr/bin/env bash
# Second call: the MoE, MAGE and AWPF methods, one benchmark invocation per method (a json each), progress shown.
set -uo pipefail
T0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 UNIIL_DATA=$PWD/.gpudata/data UNIIL_CACHE=/tmp/uc PYTHONUNBUFFERED=1
D=$OUT/gpu_check; mkdir -p $D /tmp/gc
python3 benchmarks/gpu_check.py prepare --out /tmp/gc > /dev/null 2>&1 || exit 4
echo "prepared $(( $(date +%s) - T0 )) s"
lane() { for m in "$@"; do
  python3 -m uniil_lib benchmark --scenario uniil-offline --methods $m --profile /tmp/gc/gpu-check-profile.json --out $D/b-$m.json 2>&1 | tr '\r' '\n' | grep -v "^\s*$" > $D/l-$m.log
  echo "$m finished at $(( $(date +%s) - T0 )) s"; done; }
export -f lane; export D T0
timeout ${LIMIT:-330} bash -c 'lane moe-adapters-ddas moe-adapters' &
timeout ${LIMIT:-330} bash -c 'lane mage mage-noattr' &
timeout ${LIMIT:-330} bash -c 'lane awpf awpf-fixed' &
timeout ${LIMIT:-330} bash -c 'lane moe-adapters-cil' &
wait
echo "done $(( $(date +%s) - T0 )) s"
for f in $D/l-*.log; do echo "== $f"; grep -E "it/s|s/it" $f | tail -2 | cut -c1-200; tail -3 $f | cut -c1-200; done
for f in $D/b-*.json; do python3 -c "
import json,sys;r=json.load(open('$f'))
for n,m in r['methods'].items(): print(n, m['device'], m['precision'], m.get('train_seconds'), {k:v for k,v in m['median_iteration_seconds'].items()}, round(m['metrics']['last'],2))"; done
cd $OUT && tar czf gpu2.tgz gpu_check && rm -rf gpu_check
