# Build: docker build -t askpro .    Run: docker run -p 8080:8080 -v askpro-data:/data askpro
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin askpro

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/askpro /usr/local/bin/askpro
ENV ASKPRO_SERVER__LISTEN=0.0.0.0:8080 \
    ASKPRO_DATA__DIR=/data
VOLUME /data
EXPOSE 8080
ENTRYPOINT ["askpro"]
CMD ["serve"]
