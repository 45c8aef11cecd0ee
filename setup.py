"""Installs the pipeline as a package, as Dataflow workers and the Flex Template need.

`install_requires` is the runtime part of requirements.txt (above its development
marker), so the pins are written once. main.py, the Flex Template's entry file, is not
part of the package: the Dockerfile copies it, and the workers never import it.
"""

from pathlib import Path

from setuptools import find_packages, setup

DEV_MARKER = "# --- development only"


def runtime_requirements() -> list[str]:
    lines = Path(__file__).with_name("requirements.txt").read_text().splitlines()
    runtime = lines[: next(i for i, line in enumerate(lines) if line.startswith(DEV_MARKER))]
    return [line.strip() for line in runtime if line.strip() and not line.startswith("#")]


setup(
    name="section-speed",
    version="0.1.0",
    description="Average-speed (section control) enforcement on Apache Beam",
    python_requires=">=3.11",
    # The product only: local tooling (local_stack, generator, analyst_report) stays out.
    packages=find_packages(include=["pipeline", "pipeline.*"]),
    install_requires=runtime_requirements(),
)
