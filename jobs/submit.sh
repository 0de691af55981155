#!/usr/bin/env bash
# Submit a sweep to a running Ray cluster as a Ray job. The driver runs on the head node and joins the
# cluster with --address auto; rerunning the same submission resumes the sweep.
#   RAY_ADDRESS=http://head:8265 jobs/submit.sh jobs/celeba.yaml
# With token authentication on (Ray's default), export RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) first.
set -euo pipefail
config=${1:?usage: jobs/submit.sh CONFIG}
exec ray job submit --working-dir . -- aal-sweep run "$config" --address auto
