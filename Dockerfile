# The bundled runtime as a container image (used by components/kubernetes_runtime.py).
# Build: docker build -t wallaroo-pulumi-runtime .
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY wallaroo_pulumi ./wallaroo_pulumi
COPY mac ./mac
COPY setup.py ./
COPY components ./components
# The wheel carries components/ as wallaroo_pulumi.components (built-in listener BYOP folders,
# stack components); check the runtime finds the built-in listeners there.
RUN pip install ".[scorers]" \
    && python -P -c "from wallaroo_pulumi.runtime.listeners.executor import BUILTIN_DIR as d; assert (d / 'toxicity' / 'model.py').is_file(), d" \
    && rm -rf /src
# uid = gid = 10001: components/kubernetes_runtime.py runs pods as it, with fsGroup 10001 on the volume
RUN groupadd --gid 10001 wallaroo && useradd --uid 10001 --gid 10001 --create-home wallaroo \
    && mkdir /data && chown 10001:10001 /data && chmod 700 /data
USER 10001:10001
VOLUME /data
EXPOSE 8080
# Admin token: set WALLAROO_ADMIN_TOKEN (the Kubernetes component passes its Secret) or let the
# first start mint one into /data/admin.token. Roles: `--role all` (default) | serve | scheduler.
ENTRYPOINT ["wallaroo-pulumi"]
CMD ["runtime", "serve", "--data-dir", "/data", "--host", "0.0.0.0", "--port", "8080", "--role", "all"]
