# One image for every Fleetstream process: `fleetstream api`, `fleetstream worker`, `fleetstream topics`.
# The browser UI is built in a Node stage and served by the API from /app/web/dist.
FROM node:20-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/index.html web/vite.config.js web/tsconfig.json web/openapi.json ./
COPY web/src ./src
RUN npm run build

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 FLEETSTREAM_BIND_HOST=0.0.0.0 FLEETSTREAM_WEB_DIST=/app/web/dist
WORKDIR /app
COPY pyproject.toml README.md requirements.lock ./
# The locked versions and hashes first (a layer that changes only with the lock), then the project.
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY core ./core
COPY fleetstream ./fleetstream
COPY schemas ./schemas
COPY streams ./streams
COPY sinks ./sinks
COPY api ./api
RUN pip install --no-cache-dir --no-deps .
COPY --from=web /web/dist ./web/dist
USER nobody
ENTRYPOINT ["fleetstream"]
CMD ["api"]
