# otterd in a container: docs/deploy.md ("Docker") says how to build, run, back up and recover.
# Build:  docker build -t otterd .
# Run:    docker run -d --name otterd -p 8080:8080 -v otter-data:/var/lib/otter otterd
# scripts/tests/deploy_files.sh checks that the build command, the start command and the health
# check below are the ones docs/deploy.md states, and runs the start command and the health check
# against the repository's own otterd.

# --- build stage: the release binary, from the locked dependency set ---
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN cargo build --release --locked -p otterd

# --- runtime stage: glibc, curl for the health check, and one unprivileged user ---
FROM debian:bookworm-slim AS runtime
# curl's version follows Debian bookworm's security updates; pinning it would break the build on
# the next one.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 otter \
    && useradd --system --uid 10001 --gid otter --home-dir /var/lib/otter --shell /usr/sbin/nologin otter \
    && install -d -o otter -g otter -m 0700 /var/lib/otter
COPY --from=build /src/target/release/otterd /usr/local/bin/otterd

# Everything otterd keeps (SQLite database, blobs, initial-admin-token) lives in the volume.
ENV OTTER_DATA_DIR=/var/lib/otter \
    OTTER_LISTEN=0.0.0.0:8080
VOLUME ["/var/lib/otter"]
EXPOSE 8080
USER 10001:10001

HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/healthz"]

ENTRYPOINT ["otterd"]
CMD ["serve"]

# --- paas stage (docker build --target paas): for hosts whose volumes are mounted owned by root
# (Fly.io, Railway), where uid 10001 could not write. It starts as root only to hand the data
# directory to uid 10001 (recursively: files a root shell made, e.g. with `fly ssh console`, too),
# then runs otterd as that user with no capabilities (docs/deploy.md).
FROM runtime AS paas
# hadolint ignore=DL3002
USER 0:0
ENTRYPOINT ["/bin/sh", "-c", "chown -R 10001:10001 \"$OTTER_DATA_DIR\" && chmod 0700 \"$OTTER_DATA_DIR\" && exec setpriv --reuid=10001 --regid=10001 --clear-groups --inh-caps=-all --bounding-set=-all otterd \"$@\"", "otterd"]
CMD ["serve"]

# The default target (a plain `docker build`) is the unprivileged image above.
FROM runtime
