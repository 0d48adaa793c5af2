# The bundled runtime as a container image (used by components/kubernetes_runtime.py).
# Build: docker build -t wallaroo-pulumi-runtime .
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY wallaroo_pulumi ./wallaroo_pulumi
COPY mac ./mac
COPY components ./components
RUN pip install ".[scorers]" && rm -rf /src
RUN useradd --uid 10001 --create-home wallaroo && mkdir /data && chown wallaroo /data
USER 10001
VOLUME /data
EXPOSE 8080
ENTRYPOINT ["wallaroo-pulumi"]
CMD ["runtime", "serve", "--data-dir", "/data", "--host", "0.0.0.0", "--port", "8080"]
