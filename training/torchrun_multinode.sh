#!/usr/bin/env bash
# Multi-node launch with torchrun (run this same script on every node).
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 ./training/torchrun_multinode.sh care_resnet50.in1k_ep100 /data/imagenet/train
# Each node starts GPUS_PER_NODE processes; the recipe's global batch (1024) is kept whatever the
# number of GPUs: per-device batch 128 by default, the engine accumulates gradients when
# nodes x GPUs x 128 < 1024 (e.g. 4 GPUs -> 2 micro-batches per step). --resume auto makes a
# restarted job continue from the newest good checkpoint of the run folder.
# SIGTERM or Ctrl-C reaches the workers through torchrun: they finish the step in flight, write a
# checkpoint and <run folder>/preempted, and exit 0 (torchrun itself then exits non-zero); a worker
# that dies ends the job, and collectives give up after --dist-timeout seconds (default 600).
set -euo pipefail
RECIPE=${1:?usage: $0 RECIPE DATA_ROOT [extra reproduce args]}
DATA_ROOT=${2:?usage: $0 RECIPE DATA_ROOT [extra reproduce args]}
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
GPUS_PER_NODE=${GPUS_PER_NODE:-$(nvidia-smi -L 2>/dev/null | wc -l)}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
OUTPUT_DIR=${OUTPUT_DIR:-runs}

exec torchrun \
  --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$GPUS_PER_NODE" \
  --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
  -m selfsup_zoo.training.reproduce "$RECIPE" \
  --data-root "$DATA_ROOT" --output-dir "$OUTPUT_DIR" --resume auto "$@"
