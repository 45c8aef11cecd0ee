"""Composite PTransforms and DoFns of the section-speed pipeline."""
