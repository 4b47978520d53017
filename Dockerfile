# The sanad package: gateway, worker and action server (one image, three commands).
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY flows ./flows
COPY integrations ./integrations
RUN pip install . && useradd --system --uid 1000 sanad && mkdir -p /app/var && chown sanad /app/var
USER sanad
EXPOSE 8000 5055
CMD ["sanad", "gateway", "--host", "0.0.0.0", "--port", "8000"]
