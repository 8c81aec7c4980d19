"""The web chat page served at /ui (static files only)."""
