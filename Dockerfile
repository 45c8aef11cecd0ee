# Flex Template image of the section-speed pipeline (README.md, "Deploy on Google Cloud
# Dataflow"), on Google's launcher base image for Python 3.11: its launcher runs
# FLEX_TEMPLATE_PYTHON_PY_FILE with each template parameter as --name=value.
# `latest` is the release Google recommends; to pin one, pass a dated tag from
# cloud.google.com/dataflow/docs/reference/flex-templates-base-images, e.g.
#   docker build --build-arg LAUNCHER_TAG=YYYYMMDD_RC00 .
ARG LAUNCHER_TAG=latest
FROM gcr.io/dataflow-templates-base/python311-template-launcher-base:${LAUNCHER_TAG}

ARG WORKDIR=/template
WORKDIR ${WORKDIR}

# Dependencies are installed here, at build time: a launch that pip-installs at start-up
# is slow and times out. The runtime pins are the part of requirements.txt above its
# development marker (as in setup.py); this layer is rebuilt only when they change.
COPY requirements.txt ./
RUN sed '/^# --- development only/,$d' requirements.txt > /tmp/runtime-requirements.txt \
    && pip install --no-cache-dir -r /tmp/runtime-requirements.txt \
    && rm /tmp/runtime-requirements.txt

# The pipeline package itself, and the launcher's entry file.
COPY setup.py pyproject.toml MANIFEST.in main.py ./
COPY pipeline/ pipeline/
RUN pip install --no-cache-dir --no-deps .

# main.py calls pipeline.graph.run. The setup file makes the launch pass --setup_file, so
# Beam stages this package (an sdist of setup.py) for the workers, which install it and its
# install_requires. No FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE: that would download every
# requirement again at each launch.
ENV FLEX_TEMPLATE_PYTHON_PY_FILE="${WORKDIR}/main.py" \
    FLEX_TEMPLATE_PYTHON_SETUP_FILE="${WORKDIR}/setup.py"
