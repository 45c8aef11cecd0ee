"""Domain logic of section-speed enforcement, with no Beam import.

Pure functions and small value types: geometry, the camera-event contract, the
section-speed rule and the output schemas. Transforms, the generator and the
report import them, so every rule is written once and tested in microseconds.
"""
