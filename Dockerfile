# The bundled runtime as a container image (used by components/kubernetes_runtime.py).
# Build: docker build -t wallaroo-pulumi-runtime .
# Without a daemon or a registry: scripts/runtime-image (podman on a Debian base made by mmdebstrap,
# passed as BASE_IMAGE; any base with python3.11, pip, groupadd and useradd will do).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# Dependencies first, from pyproject.toml alone: a code change rebuilds only the layer below.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['scorers']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY README.md setup.py ./
COPY wallaroo_pulumi ./wallaroo_pulumi
COPY mac ./mac
COPY components ./components
# The wheel carries components/ as wallaroo_pulumi.components (built-in listener BYOP folders,
# stack components); check the runtime finds the built-in listeners there.
RUN pip install --no-deps ".[scorers]" \
    && python -P -c "from wallaroo_pulumi.runtime.services.listeners.executor import BUILTIN_DIR as d; assert (d / 'toxicity' / 'model.py').is_file(), d" \
    && rm -rf /src
# uid = gid = 10001: components/kubernetes_runtime.py runs pods as it, with fsGroup 10001 on the volume
RUN groupadd --gid 10001 wallaroo && useradd --uid 10001 --gid 10001 --create-home wallaroo \
    && mkdir /data && chown 10001:10001 /data && chmod 700 /data
USER 10001:10001
WORKDIR /home/wallaroo
VOLUME /data
EXPOSE 8080
# Admin token: set WALLAROO_ADMIN_TOKEN (the Kubernetes component passes its Secret) or let the
# first start mint one into /data/admin.token. Roles: `--role all` (default) | serve | scheduler.
ENTRYPOINT ["wallaroo-pulumi"]
CMD ["runtime", "serve", "--data-dir", "/data", "--host", "0.0.0.0", "--port", "8080", "--role", "all"]
