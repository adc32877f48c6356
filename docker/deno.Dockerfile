# syntax=docker/dockerfile:1
# Image of the gateway, upload and metadata services (one image; compose picks the entrypoint and its permissions).
# Build context: the repository root (see .dockerignore). Example:
#   docker build -f docker/deno.Dockerfile -t vmp3-deno:dev .
# DENO_VERSION matches the version the project is developed and tested with (deno.lock format v5).
ARG DENO_VERSION=2.9.6
FROM denoland/deno:debian-${DENO_VERSION}

ENV DENO_NO_UPDATE_CHECK=1 \
    DENO_NO_PROMPT=1

WORKDIR /app
# Sources stay owned by root (read-only to the service); only node_modules is the service user's, for the install.
COPY . .
RUN install -d -o deno -g deno /app/node_modules

# The image's non-root user (uid 1993); its DENO_DIR is /deno-dir.
USER deno
# npm packages exactly as deno.lock pins them, then every entrypoint's module graph, so `deno run --cached-only`
# never fetches at start. The healthcheck script is warmed too.
RUN deno install --frozen \
 && deno cache --frozen gateway/main.ts upload/main.ts metadata/main.ts metadata/keys_cli.ts \
 && deno cache --no-config --no-lock docker/healthcheck.ts

EXPOSE 8080 8081 8082
# compose.yaml sets the command, e.g. ["deno", "run", "--cached-only", "--allow-net=...", "gateway/main.ts"].
CMD ["deno", "--version"]
