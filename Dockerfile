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
