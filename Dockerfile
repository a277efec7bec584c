# lacquer: multi-stage build, slim non-root runtime.
#   docker build -t lacquer .
#   docker run --rm -p 6081:6081 -v $PWD/conf/docker.yaml:/etc/lacquer/lacquer.yaml:ro lacquer
# The configuration is read from /etc/lacquer/lacquer.yaml (mount your own there).
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin lacquer

FROM debian:bookworm-slim
RUN useradd --system --no-create-home --uid 10001 lacquer
COPY --from=build /src/target/release/lacquer /usr/local/bin/lacquer
COPY conf/docker.yaml /etc/lacquer/lacquer.yaml
USER lacquer
EXPOSE 6081 6082
ENTRYPOINT ["/usr/local/bin/lacquer", "--config", "/etc/lacquer/lacquer.yaml"]
