# Larder's container image: Debian's slim base, one static-enough binary, a non-root user.
#
#   docker build -t larder .                       compile inside the Rust image, then the runtime
#   docker build --target from-wheel -t larder .   the same runtime around the wheel this checkout
#                                                  built (scripts/image; no Rust toolchain inside)
#
# The stages are ordered for Docker's classic builder too (engines without BuildKit, such as
# Debian's docker.io), which builds every stage before its target: the wheel target comes first,
# so it needs neither the Rust image nor a compiler. BuildKit builds only what the target needs.

FROM debian:bookworm-slim AS runtime
# ca-certificates: TLS to the upstream; curl: the healthcheck. Unpinned on purpose: the slim
# base image's Debian release fixes the versions, and security updates should apply.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/larder --create-home larder
WORKDIR /var/lib/larder
ENV LARDER_LISTEN=0.0.0.0:3141 \
    LARDER_DATA_DIR=/var/lib/larder
VOLUME ["/var/lib/larder"]
EXPOSE 3141
# Larder drains for 5 s on SIGTERM, then gives open downloads up to 30 s: a grace period of 40 s
# (docker stop -t 40, compose's stop_grace_period) loses nothing.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --retries=12 CMD ["curl", "-fsS", "http://127.0.0.1:3141/-/health"]
ENTRYPOINT ["larder"]
CMD ["serve"]

# The binary out of the wheel (issue 16), so that the image and the wheel are the same binary.
FROM debian:bookworm-slim AS wheel
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends unzip \
    && rm -rf /var/lib/apt/lists/*
# pyproject.toml is there so that the COPY succeeds without a wheel too: the classic builder runs
# this stage for the default target as well, in a checkout that built none.
COPY pyproject.toml target/wheels* /tmp/wheels/
RUN if ls /tmp/wheels/larder-*.whl >/dev/null 2>&1; then \
        unzip -q -j -d /out /tmp/wheels/larder-*.whl 'larder-*.data/scripts/larder' \
        && chmod 0755 /out/larder && /out/larder --version; \
    else \
        echo "no wheel in target/wheels: the from-wheel target needs one (scripts/image builds it)"; \
    fi

FROM runtime AS from-wheel
COPY --from=wheel /out/larder /usr/local/bin/larder
USER 10001

# From source, in the Rust image: the default target, for machines with a registry.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
COPY benches ./benches
COPY config ./config
RUN cargo build --release --locked --bin larder

FROM runtime
COPY --from=build /src/target/release/larder /usr/local/bin/larder
USER 10001
