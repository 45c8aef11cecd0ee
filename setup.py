"""Installs the pipeline as a package, as the Flex Template image and local set-ups need.

requirements.txt is the one list of pins, cut in sections by marker lines:
- above the first marker: `install_requires`, what every installation needs;
- `# --- extra: NAME` starts an optional extra, `pip install .[NAME]` (embedded-ocr);
- DEV_MARKER starts the development and local-tooling pins, never part of the package.
`pip install -r requirements.txt` (scripts/bootstrap.sh) installs every section.
main.py, the Flex Template's entry file, is not part of the package: the Dockerfile
copies it, and the workers never import it.
"""

from pathlib import Path

from setuptools import find_packages, setup

DEV_MARKER = "# --- development only"
# The product the workers run: the graph and entry point (pipeline), the Beam transforms
# (transforms) and the rules and clients both build on (section_speed). Local tooling
# (local_stack, generator, analyst_report) and the desk (its own image) stay out.
PRODUCT_PACKAGES = [
    f"{top}{sub}" for top in ("pipeline", "transforms", "section_speed") for sub in ("", ".*")
]
EXTRA_MARKER = "# --- extra: "


def requirement_sections() -> tuple[list[str], dict[str, list[str]]]:
    """(install_requires, extras_require) from requirements.txt's sections."""
    runtime: list[str] = []
    extras: dict[str, list[str]] = {}
    current = runtime
    for raw in Path(__file__).with_name("requirements.txt").read_text().splitlines():
        line = raw.strip()
        if line.startswith(DEV_MARKER):
            break
        if line.startswith(EXTRA_MARKER):
            current = extras.setdefault(line.removeprefix(EXTRA_MARKER).strip(), [])
        elif line and not line.startswith("#"):
            current.append(line)
    return runtime, extras


install_requires, extras_require = requirement_sections()

setup(
    name="section-speed",
    version="0.1.0",
    description="Average-speed (section control) enforcement on Apache Beam",
    python_requires=">=3.11",
    packages=find_packages(include=PRODUCT_PACKAGES),
    install_requires=install_requires,
    extras_require=extras_require,
    license="Apache-2.0",
)
