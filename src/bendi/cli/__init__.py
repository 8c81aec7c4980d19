"""The `bendi` command: one module per command group (models, chat, serve, doctor, kb). Each
parses its options, calls a service, and prints; errors become one line and exit code 1."""
