# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run in a slim Debian image as a non-root user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
COPY benches ./benches
COPY config ./config
RUN cargo build --release --locked --bin larder

FROM debian:bookworm-slim
# ca-certificates: TLS to the upstream; curl: the healthcheck. Unpinned on purpose: the slim
# base image's Debian release fixes the versions, and security updates should apply.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/larder --create-home larder
COPY --from=build /src/target/release/larder /usr/local/bin/larder
USER 10001
WORKDIR /var/lib/larder
ENV LARDER_LISTEN=0.0.0.0:3141 \
    LARDER_DATA_DIR=/var/lib/larder
VOLUME ["/var/lib/larder"]
EXPOSE 3141
HEALTHCHECK --interval=5s --timeout=3s --retries=12 CMD ["curl", "-fsS", "http://127.0.0.1:3141/-/health"]
ENTRYPOINT ["larder"]
CMD ["serve"]

# The same image from the binary wheel (issue 16), so that the image and the wheel are the same
# binary: `./scripts/test` (or `maturin build --release --out target/wheels`) builds the wheel,
# then `docker build --target from-wheel -t larder .` installs it. Not the default target.
FROM python:3.12-slim-bookworm AS from-wheel
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/larder --create-home larder
COPY target/wheels/ /tmp/wheels/
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --no-index --find-links /tmp/wheels larder \
    && rm -rf /tmp/wheels
USER 10001
WORKDIR /var/lib/larder
ENV LARDER_LISTEN=0.0.0.0:3141 \
    LARDER_DATA_DIR=/var/lib/larder
VOLUME ["/var/lib/larder"]
EXPOSE 3141
HEALTHCHECK --interval=5s --timeout=3s --retries=12 CMD ["curl", "-fsS", "http://127.0.0.1:3141/-/health"]
ENTRYPOINT ["larder"]
CMD ["serve"]
