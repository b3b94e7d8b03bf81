# syntax=docker/dockerfile:1
#
# AuthNexus: one image for every subcommand (default: the Control Plane).
#   docker build -t authnexus .
#   docker run -p 9090:9090 -v authnexus-data:/var/lib/authnexus authnexus
#   docker run authnexus --help

# --- build: compile TypeScript and better-sqlite3, then drop dev dependencies --------------
FROM node:20-bookworm-slim AS builder
WORKDIR /app

# Toolchain for better-sqlite3's native addon (used when no prebuilt binary is available).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*

# Dependencies first, so source edits do not invalidate this layer. --ignore-scripts skips the
# root `prepare` (the sources are not copied yet); better-sqlite3 is the only dependency with an
# install script, so it is built explicitly.
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund \
 && npm rebuild better-sqlite3

COPY . .
RUN npm run build \
 && npm prune --omit=dev --ignore-scripts --no-audit --no-fund

# --- runtime -------------------------------------------------------------------------------
FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    AUTHNEXUS_DATA_DIR=/var/lib/authnexus
WORKDIR /app

# Owned by root and not writable by the service user; only the data dir is.
COPY --from=builder /app/package.json ./package.json
COPY --from=builder /app/node_modules ./node_modules
COPY --from=builder /app/dist ./dist
COPY --from=builder /app/bin ./bin

# Create and chown before VOLUME: changes to a volume path after VOLUME are discarded.
RUN mkdir -p /var/lib/authnexus && chown node:node /var/lib/authnexus
USER node
VOLUME /var/lib/authnexus

# 9090 admin API, 9091 node API (mTLS), 9092 OCSP.
EXPOSE 9090 9091 9092

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9090/admin/v1/setup/status',{signal:AbortSignal.timeout(4000)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]

ENTRYPOINT ["node", "/app/bin/authnexus"]
CMD ["serve-cp", "--admin-listen", "0.0.0.0:9090"]
