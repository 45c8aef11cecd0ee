"""Local tooling: emulators, the pipeline as a local process, and the demo.

Not installed on Dataflow workers: setup.py ships the `pipeline` package only.
"""
