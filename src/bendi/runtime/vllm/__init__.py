"""The vLLM engine: a supervised `vllm serve` subprocess per model, spoken to over HTTP."""
