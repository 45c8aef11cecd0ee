"""The product's core without Beam's graph: domain rules (no Beam import) and service clients.

The Beam transforms (`transforms/`) and the graph (`pipeline/`) build on it; the desk,
the generator and the report import it too, so every rule is written once.
"""
