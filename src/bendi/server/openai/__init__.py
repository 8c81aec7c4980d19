"""The OpenAI dialect: request shapes (protocol.py), routes (router.py), and the translation
to the internal request and from events back to OpenAI JSON and SSE chunks (serving.py)."""
