# One image for the section-speed pipeline on Dataflow (docs/deploy.md): the Flex
# Template's launcher runs it to build the job, and the workers run it as their SDK
# container (launched with --parameters sdk_container_image=THIS_IMAGE), so both have the
# same code and dependencies and no worker installs anything at start. This is the layout
# of Google's Python Flex Template sample with dependencies: Beam's SDK image (whose
# entrypoint /opt/apache/beam/boot starts a worker) plus the Flex Template launcher binary.
#
# Pinned: Beam's version is requirements.txt's apache-beam pin (a test checks it). The
# launcher's tag is one of Google's list of Flex Template base images,
# https://cloud.google.com/dataflow/docs/reference/flex-templates-base-images, whose tags
# read YYYYMMDD_RCNN (lower-case -rcNN forms circulate but are not on the list; a test
# holds the form). 20260122_RC00 is the row marked "(latest)" in the copy of that page
# (docs.cloud.google.com/dataflow/docs/reference/flex-templates-launcher-images) read on
# 2026-12-07; it replaces 20230622_RC00, the python311 tag Google's 2024 sample pinned.
# To move it forward (docs/deploy.md, One image): take the newest "(latest)" row of that
# page's table, check the python311 repository carries it,
#   gcloud container images list-tags gcr.io/dataflow-templates-base/python311-template-launcher-base --filter=tags:TAG
# then set LAUNCHER_TAG below (or: docker build --build-arg LAUNCHER_TAG=TAG .).
# The embedded plate reader (RapidOCR, onnxruntime, OpenCV) is in: the cascade reads plates
# on the worker before it pays Cloud Vision. --build-arg EMBEDDED_OCR=false leaves it out.
ARG LAUNCHER_TAG=20260122_RC00
FROM gcr.io/dataflow-templates-base/python311-template-launcher-base:${LAUNCHER_TAG} AS launcher

FROM apache/beam_python3.11_sdk:2.77.0

COPY --from=launcher /opt/google/dataflow/python_template_launcher \
    /opt/google/dataflow/python_template_launcher

ARG WORKDIR=/template
WORKDIR ${WORKDIR}

# The package with setup.py's install_requires (requirements.txt's runtime pins), at build
# time: a launch or a worker start that pip-installs is slow and needs the package index.
# With the embedded OCR (the embedded-ocr extra), the default plate reader on Dataflow is
# the cascade, which pays Cloud Vision only for the photos it cannot accept (docs/plates.md);
# --build-arg EMBEDDED_OCR=false leaves it out, for --plate_reader cloud-vision only.
# LICENSE and NOTICE travel with the image, which redistributes the package (docs/licences.md).
ARG EMBEDDED_OCR=true
COPY LICENSE NOTICE requirements.txt setup.py pyproject.toml MANIFEST.in ./
COPY pipeline/ pipeline/
COPY transforms/ transforms/
COPY section_speed/ section_speed/
RUN if [ "${EMBEDDED_OCR}" = "true" ]; then extras="[embedded-ocr]"; else extras=""; fi \
    && pip install --no-cache-dir "./${extras}"

# The launcher runs this file with each template parameter as --name=value. No
# FLEX_TEMPLATE_PYTHON_SETUP_FILE nor _REQUIREMENTS_FILE: the package is installed above,
# and either would make every launch stage (and every worker install) it again.
COPY main.py ./
ENV FLEX_TEMPLATE_PYTHON_PY_FILE="${WORKDIR}/main.py"

ENTRYPOINT ["/opt/apache/beam/boot"]
