#!/usr/bin/env bash
# One study on one multi-GPU host: one worker process per GPU (round robin when there are more
# workers than GPUs). The default journal file storage is safe for several processes on one
# host, so nothing else is needed:
#
#   deploy/tune/multi-gpu.sh 8          # 8 workers; tune.n_trials is shared by all of them
#
# With PostgreSQL instead (other machines can then join the same study):
#   export ISIM_TUNE_STORAGE=postgresql://isim@db.example.org/optuna PGPASSWORD=...
set -euo pipefail
cd "$(dirname "$0")/../.."
workers=${1:-$(nvidia-smi -L 2>/dev/null | wc -l)}
dvc repro prepare                                   # the dataset every trial reads
exec isim tune --data data/prepared --out tune/results --workers "${workers:-1}"
