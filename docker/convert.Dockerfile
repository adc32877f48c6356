# syntax=docker/dockerfile:1
# Image of a Convert worker: an FFmpeg image with the deno binary copied in.
# Build context: the repository root (see .dockerignore). Example:
#   docker build -f docker/convert.Dockerfile -t vmp3-convert:dev .
ARG DENO_VERSION=2.9.6
FROM denoland/deno:bin-${DENO_VERSION} AS deno

# FFmpeg 7.1 built from source on Ubuntu 24.04; ffmpeg and ffprobe in /usr/local/bin.
FROM jrottenberg/ffmpeg:7.1-ubuntu2404
COPY --from=deno /deno /usr/local/bin/deno

# The worker runs ffmpeg with a cleared environment (clearEnv), so LD_LIBRARY_PATH, which this base image relies on,
# is gone for the child: register the library folders with the dynamic linker instead, and prove it works.
RUN printf '/usr/local/lib\n/usr/local/lib64\n' > /etc/ld.so.conf.d/vmp3-ffmpeg.conf \
 && ldconfig \
 && env -i /usr/local/bin/ffmpeg -hide_banner -version \
 && env -i /usr/local/bin/ffprobe -hide_banner -version \
 && deno --version \
 && groupadd --system vmp3 \
 && useradd --system --gid vmp3 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin vmp3 \
 && install -d -o vmp3 -g vmp3 -m 0700 /work /deno-dir

ENV DENO_DIR=/deno-dir \
    DENO_NO_UPDATE_CHECK=1 \
    DENO_NO_PROMPT=1 \
    WORK_DIR=/work

WORKDIR /app
# Sources stay owned by root (read-only to the worker); only node_modules is the worker user's, for the install.
COPY . .
RUN install -d -o vmp3 -g vmp3 /app/node_modules

USER vmp3
RUN deno install --frozen \
 && deno cache --frozen convert/main.ts \
 && deno cache --no-config --no-lock docker/healthcheck.ts

EXPOSE 8083
# The FFmpeg base image sets ENTRYPOINT ["ffmpeg"]: reset it. compose.yaml sets the command and `init: true`.
ENTRYPOINT []
CMD ["deno", "--version"]
