# The platform's image for compose.yaml; servers are external there.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain domain
COPY projections projections
COPY adapters adapters
COPY runners runners
RUN pip install --no-cache-dir . && useradd --system --create-home picasse
USER picasse
ENTRYPOINT []
