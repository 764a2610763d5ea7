#!/bin/bash
# A second A B B A, then one B with the service at nice 19.
cd /tmp/fs-b
OUT=/work/wt/filesproc/bench/results/20261204-files-service
run() { # name src
  /tmp/benchlock.sh .venv/bin/python -m bench.files --order cffc --rounds 3 --phase-seconds 5 \
    --server-src "$2" --out "$OUT" --name "$1" "${@:3}" 2>&1 | tail -1
}
date -u; run 5-A-main /tmp/base-files
date -u; run 6-B-service /tmp/fs-b --file-service on
date -u; run 7-B-service /tmp/fs-b --file-service on
date -u; run 8-A-main /tmp/base-files
date -u; run 9-B-service-nice19 /tmp/fs-b --file-service on --server-env PCHAT_FILES__SERVICE_NICE=19
date -u
