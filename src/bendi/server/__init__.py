"""The HTTP server: create_app(settings) (app.py), one router and serving module per dialect
(openai/, ollama/, kb_routes.py), the HTTP toolkit shared by them (http.py: SSE, NDJSON, the
mid-stream error event, the caller of a request), errors in each dialect's shape (errors.py),
auth and body limits (security.py), Prometheus metrics (metrics.py). Logic lives in the services
below; routes translate."""
