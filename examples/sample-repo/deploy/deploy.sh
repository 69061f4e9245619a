#!/usr/bin/env bash
# Deploy the service (sample only: prints what it would do).
set -euo pipefail
echo "would rsync src/ to payments@app.internal using deploy/id_rsa"
