"""The Ollama dialect: request shapes (protocol.py), routes (router.py), and the translation
to the internal request and from events back to Ollama JSON lines (serving.py)."""
