# syntax=docker/dockerfile:1
# The production binaries (edge, persister, router, notifier, sbctl) in one image;
# compose.yaml and the Helm chart pick the binary with `command`.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# librdkafka is built from source by rdkafka-sys (make + a C compiler, both in this image).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p switchboard-edge -p switchboard-workers -p switchboard-admin --bins \
    && mkdir -p /out \
    && cp target/release/edge target/release/persister target/release/router target/release/notifier target/release/sbctl /out/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home switchboard
COPY --from=build /out/ /usr/local/bin/
USER switchboard
EXPOSE 8080
ENV RUST_LOG=info
CMD ["edge"]
