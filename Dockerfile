# Builds the single `jetscribe` binary with the official CTranslate2 and ONNX Runtime libraries
# and the models (Whisper, Silero VAD).
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake unzip python3-pip && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN bash scripts/fetch-ct2.sh vendor/ctranslate2/lib && bash scripts/fetch-models.sh models \
 && cargo build --release --locked --bin jetscribe

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg ca-certificates && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/jetscribe --create-home jetscribe
WORKDIR /opt/jetscribe
COPY --from=build /src/vendor/ctranslate2/lib /opt/jetscribe/vendor/ctranslate2/lib
COPY --from=build /src/vendor/onnxruntime/lib /opt/jetscribe/vendor/onnxruntime/lib
COPY --from=build /src/models /opt/jetscribe/models
COPY --from=build /src/target/release/jetscribe /opt/jetscribe/target/release/jetscribe
ENV LD_LIBRARY_PATH=/opt/jetscribe/vendor/ctranslate2/lib WHISPER_MODEL=/opt/jetscribe/models/whisper-base
# Every part runs as an unprivileged user: ffmpeg reads uploads, which are hostile.
USER jetscribe
ENV DATA_DIR=/var/lib/jetscribe
ENTRYPOINT ["/opt/jetscribe/target/release/jetscribe"]
CMD ["up"]
