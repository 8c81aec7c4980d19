"""The planner: what this machine has (hardware.py, impure), the machine a plan is for
(machine.py), memory estimates (memory.py), the model catalog (catalog.py), llama.cpp placement
(placement.py), vLLM layout (vllm_layout.py), the verdicts (plan.py), and the load guard the model
manager calls (guard.py). Everything but hardware.py is pure functions over numbers."""
