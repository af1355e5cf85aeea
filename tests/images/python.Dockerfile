# The build container of the compose tests (issue 28): Python, pip in a venv on PATH, and
# Debian's twine, from the local Debian base (scripts/image). Stands in for python:3.12-slim
# where no registry is reachable.
FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv twine ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1
CMD ["python3"]
