# unsubd, for production-like runs (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config ./config
COPY handlers ./handlers
COPY worker ./worker
RUN pip install . && useradd --system --uid 10001 --home-dir /var/lib/unsubd --create-home unsubd
USER unsubd
WORKDIR /var/lib/unsubd
EXPOSE 2525 8025
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8025/readyz', timeout=2).status == 200 else 1)"
CMD ["unsubd", "serve"]
