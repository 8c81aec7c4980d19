"""vLLM layout: the smallest tensor-parallel (and, when the heads forbid it, pipeline-parallel)
deployment of a model on a machine's GPUs, with the `vllm serve` command that runs it."""

from __future__ import annotations

from bendi.planner.catalog import CatalogModel
from bendi.planner.machine import GB, Hardware
from bendi.planner.placement import Option

#: vLLM's default --gpu-memory-utilization
VLLM_GPU_UTILIZATION = 0.90
#: vLLM activations, CUDA graphs and NCCL buffers per GPU, outside weights and KV cache
VLLM_RESERVE = 3 * GB


def valid_tp_sizes(heads: int, n_gpus: int) -> list[int]:
    """Tensor-parallel sizes vLLM accepts: powers of two up to n_gpus that divide the heads."""
    sizes, tp = [], 1
    while tp <= n_gpus:
        if heads % tp == 0:
            sizes.append(tp)
        tp *= 2
    return sizes


def vllm_option(model: CatalogModel, hw: Hardware, ctx: int, nodes: int = 1) -> tuple[Option | None, str]:
    """The smallest vLLM tensor-parallel deployment that fits, or why there is none. With
    `nodes` > 1 (a Ray cluster of machines like `hw`), tensor parallelism stays inside a node and
    the nodes run pipeline stages: links between machines are far slower than NVLink/HCCS, and a
    stage boundary sends one activation per token where tensor parallelism all-reduces per layer."""
    gpus = hw.discrete_gpus
    if not gpus:
        return None, "vLLM needs NVIDIA/AMD/Ascend/Moore Threads GPUs"
    if nodes > 1:
        gpus = gpus * nodes
    if not model.hf_sizes:
        return None, "vLLM serves safetensors checkpoints; this model is only known as a GGUF file"
    precision = "FP8" if "FP8" in model.hf_sizes else "BF16"
    weights = model.hf_sizes[precision]
    shape = model.shape
    per_gpu = min(g.memory for g in gpus) * VLLM_GPU_UTILIZATION
    sizes = valid_tp_sizes(shape.heads, len(gpus))

    def kv_per_token(tp: int) -> int:
        if shape.mla_latent:
            return shape.layers * shape.mla_latent * 2  # the latent is replicated on every rank
        kv_heads = max(1, shape.kv_heads // tp)  # fewer KV heads than ranks: vLLM replicates them
        return 2 * shape.layers * kv_heads * shape.head_dim * 2

    # tensor parallelism alone first (smallest TP that fits: fewer all-reduces), then pipeline
    # stages over all GPUs when the heads forbid a large enough TP
    layouts = [(tp, 1) for tp in sizes]
    layouts += [(tp, len(gpus) // tp) for tp in reversed(sizes)
                if tp * (len(gpus) // tp) == len(gpus) and len(gpus) // tp > 1]
    if nodes > 1:
        per_node = len(gpus) // nodes
        sizes = valid_tp_sizes(shape.heads, per_node)
        # each node a stage (or several, when the heads forbid filling a node with one TP group)
        layouts = [(tp, nodes * (per_node // tp)) for tp in reversed(sizes)]
    for tp, pp in layouts:
        ranks = tp * pp
        free_for_kv = per_gpu - weights / ranks - VLLM_RESERVE
        need_kv = kv_per_token(tp) * ctx / pp
        if free_for_kv >= need_kv:
            bw = min((g.bandwidth or 0) for g in gpus) or None
            active = weights * (shape.active_params / shape.params if model.is_moe else 1.0)
            # ranks of one pipeline stage read their shards in parallel; stages run in turn
            speed = tp * bw / active if bw else None
            capacity = int(free_for_kv * pp / kv_per_token(tp))
            layout = f"TP={tp}" + (f" x PP={pp}" if pp > 1 else "") + (f" over {nodes} nodes" if nodes > 1 else "")
            command = (f"vllm serve {model.hf_repo} --tensor-parallel-size {tp}"
                       + (f" --pipeline-parallel-size {pp}" if pp > 1 else "")
                       + (" --distributed-executor-backend ray" if nodes > 1 else "")
                       + f" --max-model-len {ctx} --gpu-memory-utilization {VLLM_GPU_UTILIZATION}"
                       + " --reasoning-parser deepseek_r1"
                       + (" --trust-remote-code" if shape.mla_latent else ""))
            option = Option("vllm", "vllm", precision, ctx, 1, int(weights / ranks + need_kv + VLLM_RESERVE),
                            int(per_gpu), speed, tensor_parallel=tp, pipeline_parallel=pp,
                            detail={"layout": layout, "weights_per_gpu": int(weights / ranks),
                                    "kv_tokens_capacity": capacity, "command": command,
                                    "valid_tp_sizes": sizes, "nodes": nodes,
                                    "bendi": (f"BENDI_VLLM_NODES={nodes} BENDI_VLLM_TENSOR_PARALLEL={tp} "
                                              "BENDI_VLLM_RAY_ADDRESS=<head>:6379 bendi serve")
                                    if nodes > 1 else None})
            note = ""
            if tp * pp < len(gpus) and nodes == 1:
                note = (f"uses {tp * pp} of {len(gpus)} GPUs; run {len(gpus) // (tp * pp)} replicas "
                        "behind one endpoint for more throughput")
            return option, note
    total = per_gpu * len(gpus)
    reason = (f"needs {weights / GB:.0f} GB of {precision} weights plus KV cache and "
              f"{VLLM_RESERVE / GB:.0f} GB per GPU for activations; {len(gpus)} x "
              f"{min(g.memory for g in gpus) / GB:.0f} GB x {VLLM_GPU_UTILIZATION} = {total / GB:.0f} GB usable")
    if len(gpus) not in sizes and len(gpus) > 1:
        reason += (f"; tensor parallelism must divide the {shape.heads} attention heads, so with "
                   f"{len(gpus)} GPUs TP can be {', '.join(map(str, sizes))}")
    return None, reason
