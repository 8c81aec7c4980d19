"""The generation service: the one path between every entry point (CLI, both HTTP dialects,
knowledge-base answers, the web console) and the engines.

It resolves model names (aliases, `kb:<name>`), applies a model's defaults, acquires and releases
loaded models, streams the runtime's events, collects whole answers, and shows every generation
and embedding to the observers exactly once: `admit` before it starts (may refuse it), `record`
after it ends. A feature that must see every request (metrics, audit, quotas) is an observer;
it is never written into a route. No click, no FastAPI here.
"""
