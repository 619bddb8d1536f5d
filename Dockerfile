# One image for every Fleetstream process: `fleetstream api`, `fleetstream worker`, `fleetstream topics`.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 FLEETSTREAM_BIND_HOST=0.0.0.0
WORKDIR /app
COPY pyproject.toml README.md ./
COPY fleetstream ./fleetstream
COPY schemas ./schemas
COPY streams ./streams
COPY sinks ./sinks
COPY api ./api
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["fleetstream"]
CMD ["api"]
