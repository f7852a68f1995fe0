# ngserve for an institutional deployment: config and secrets come from mounted files.
#   docker build -t ngserve .
#   docker run -p 9000:9000 -v $PWD/deploy:/etc/ngserve:ro ngserve
# /etc/ngserve/ngserve.toml names its secrets by path (secret_file = "secret", ...), relative to itself.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY server ./server
COPY ngstate ./ngstate
COPY volumes ./volumes
COPY annotations ./annotations
RUN pip install '.[postgres]' && rm -rf /src

RUN useradd --system --uid 10001 --home-dir /var/lib/ngserve --create-home ngserve
USER ngserve
WORKDIR /var/lib/ngserve

EXPOSE 9000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:9000/-/health', timeout=4).status != 200)"]

ENTRYPOINT ["ngserve"]
CMD ["serve", "--config", "/etc/ngserve/ngserve.toml", "--host", "0.0.0.0", "--port", "9000"]
