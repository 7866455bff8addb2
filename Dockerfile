# Production image of the service. Build: docker compose build
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin cryptovault

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 cryptovault
COPY --from=build /src/target/release/cryptovault /usr/local/bin/cryptovault
USER cryptovault
ENV PORT=8000
EXPOSE 8000
ENTRYPOINT ["cryptovault"]
CMD ["serve"]
