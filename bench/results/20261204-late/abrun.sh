#!/bin/bash
# abrun.sh LABEL "bench.load args" : A B B A main vs ckpt; prints one line per run
label=$1; args=$2; out=/work/wt/ckpt/bench/results/20261204-late
cd /work/main
for n in A1 B1 B2 A2; do
  case $n in A*) src=/work/main;; B*) src=/work/wt/ckpt;; esac
  name=$label-$n
  /tmp/benchlock.sh .venv/bin/python -m bench.load $args --no-plots --out $out/$name --name $name --server-src $src --quiet >/dev/null 2>&1
  python3 - $out/$name <<'PY'
import json,sys,re
d=json.load(open(sys.argv[1]+'/result.json')); s=open(sys.argv[1]+'/summary.md').read()
L=d['server_latency_ms']; m=re.search(r'p50 ([\d.]+), p90 ([\d.]+), p99 ([\d.]+), p99.9 ([\d.]+), max ([\d.]+)',s)
g=lambda k: re.search(r'\| '+k+r' \| ([\d.,–]+)',s).group(1)
print(sys.argv[1].split('/')[-1], 'deliv/s', g('deliveries_per_s'), 'p50/p90/p99/p999/max', '/'.join(m.groups()) if m else '-', 'commit p99', L['pchat_store_commit_seconds']['p99'], 'srv-deliv p99', L['pchat_fanout_delivery_latency_seconds']['p99'], 'srv cpu', g('server_cpu'), 'us/deliv', re.search(r'server_us_per_delivery ([\d.]+)',s).group(1), flush=True)
PY
done
