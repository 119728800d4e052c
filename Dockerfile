# One image for every trainrun process (api, worker, reaper, migrations); the command picks.
#   docker build -t trainrun .                                  # CPU torch (default)
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t trainrun .
FROM python:3.11-slim

# The PyTorch wheel index: .../whl/cpu (default) or a CUDA one such as .../whl/cu128.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, from the chosen index, in its own layer: `pip install .` then finds the
# torch==2.13.0 pin satisfied and never pulls the multi-GB default build from PyPI.
RUN pip install "torch==2.13.0" --index-url "${TORCH_INDEX_URL}"

WORKDIR /src
COPY . .
RUN pip install . && rm -rf /src

# Non-root; state under /var/lib/trainrun, artifacts and data on volumes mounted there (a
# named volume starts out with its directory's owner, so the user can write to it).
RUN useradd --system --uid 10001 --create-home --home-dir /home/trainrun trainrun \
    && mkdir -p /var/lib/trainrun/artifacts /var/lib/trainrun/data \
    && chown -R trainrun:trainrun /var/lib/trainrun
ENV TRAINRUN_HOME=/var/lib/trainrun \
    TRAINRUN_ARTIFACT_DIR=/var/lib/trainrun/artifacts \
    TRAINRUN_DATA_DIR=/var/lib/trainrun/data
USER trainrun
WORKDIR /var/lib/trainrun

EXPOSE 8000
ENTRYPOINT ["trainrun"]
# Alone, the image runs the embedded mode (SQLite + a filesystem broker under TRAINRUN_HOME).
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
