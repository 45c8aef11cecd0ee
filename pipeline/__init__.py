"""Section-speed enforcement on Apache Beam: options, graph wiring and entry points."""
