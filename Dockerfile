# tunesmith serve in a container. Unbuilt: the development machines have no Docker, so this stays simple.
#   docker build -t tunesmith .
#   docker run -p 8000:8000 -v "$PWD/runs/support:/model:ro" tunesmith
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# The CPU wheel of the pinned torch first, so the package's torch>=2.1 does not pull a CUDA build.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir '.[serve,onnx]'
EXPOSE 8000
# 0.0.0.0 inside the container only; the port mapping decides what is exposed. SIGTERM (docker stop) drains.
CMD ["tunesmith", "serve", "/model", "--host", "0.0.0.0", "--port", "8000"]
