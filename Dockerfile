# The platform's image for compose.yaml: every service runs one `picasse` command in it;
# servers are external there.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain domain
COPY projections projections
COPY adapters adapters
COPY runners runners
RUN pip install --no-cache-dir . && useradd --system --create-home picasse \
    && install -d -o picasse -m 0700 /run/picasse-keys
# A named volume first mounted on /run/picasse-keys takes this directory's owner and mode,
# so the services (not root) can create the master key there on first start.
USER picasse
ENTRYPOINT []
