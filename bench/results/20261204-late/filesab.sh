#!/bin/bash
# filesab.sh LABEL [extra args]: bench.files A B B A, main vs ckpt
label=$1; shift; out=/work/wt/ckpt/bench/results/20261204-late
cd /work/main
for n in A1 B1 B2 A2; do
  case $n in A*) src=/work/main;; B*) src=/work/wt/ckpt;; esac
  /tmp/benchlock.sh .venv/bin/python -m bench.files --order cffc --rounds 3 --phase-seconds 5 --server-src $src --name $label-$n --out $out "$@" >/dev/null 2>&1
  d=$(ls -d $out/*-files-$label-$n | tail -1)
  python3 - $d <<'PY'
import json,sys
d=json.load(open(sys.argv[1]+'/result.json')); c=d['chat']; t=d['transfers']
print(sys.argv[1].split('/')[-1], 'calm p99', c['calm']['p99_ms'], 'files p99', c['with_files']['p99_ms'], 'ratio', d['p99_ratio'], d['p99_ratio_95'], 'p50 ratio', d['p50_ratio'], d['verdict'], 'up MB/s', t['upload_1MB']['total_mb_s'], t['upload_20MB']['total_mb_s'], 'down', t['download_1MB']['total_mb_s'], t['download_20MB']['total_mb_s'], flush=True)
PY
done
