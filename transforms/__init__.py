"""Beam transforms of the pipeline: the enforcement composite and its parts, and the sinks."""

# Registers the camera-event coder with Beam wherever any transform is used.
from transforms import coders as _coders  # noqa: F401
