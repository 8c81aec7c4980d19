"""Engines and what surrounds them: the engine contract and registry (engine.py), which models
are loaded (manager.py), the internal request and event types (types.py), the reasoning split,
stop strings, chat templates, grammars, the thread tuner, and the llama.cpp engine (llama/).
Nothing here knows about HTTP or the CLI."""
