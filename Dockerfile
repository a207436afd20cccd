# One image, one binary: `sigma api`, `sigma worker --queue …`, `sigma setup`.
FROM rust:1.92-bookworm AS build
WORKDIR /src
COPY . .
# Queries are checked against the committed .sqlx/ cache; no database at build time.
ENV SQLX_OFFLINE=true
RUN cargo build --release --locked --bin sigma

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/sigma /usr/local/bin/sigma
# The signing key volume is mounted here; the unprivileged user must own it to write a new key.
RUN mkdir /keys && chown 65534:65534 /keys
USER 65534:65534
ENTRYPOINT ["sigma"]
CMD ["api"]
