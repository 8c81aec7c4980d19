"""Knowledge bases: loaders (files to text with anchors), chunking, segmenting for the lexical
index, the SQLite index (index.py), embedders, retrieval (lexical + vector, fused), ingest, the
registry in bendi.db, and the prompt and citations of an answer (answer.py, answering.py).
service.py is the facade the CLI and server use; generation itself goes through bendi.core."""
