#!/bin/bash
# A B B A: A = main (/tmp/base-files), B = the branch with the file service on (/tmp/fs-b).
cd /tmp/fs-b
OUT=/work/wt/filesproc/bench/results/20261204-files-service
run() { # name src
  /tmp/benchlock.sh .venv/bin/python -m bench.files --order cffc --rounds 3 --phase-seconds 5 \
    --server-src "$2" --out "$OUT" --name "$1" "${@:3}" 2>&1 | tail -3
}
date -u; run 1-A-main /tmp/base-files
date -u; run 2-B-service /tmp/fs-b --file-service on
date -u; run 3-B-service /tmp/fs-b --file-service on
date -u; run 4-A-main /tmp/base-files
date -u
