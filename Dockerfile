# CPU image (default):   docker build -t labnets .
# GPU image:             docker build --target gpu -t labnets:gpu .
FROM python:3.11-slim AS cpu
WORKDIR /srv
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 \
    MODEL_DIR=/srv/models DATA_DIR=/data DEVICE=cpu
COPY pyproject.toml README.md ./
COPY app ./app
COPY training ./training
COPY benchmarks ./benchmarks
RUN pip install --no-cache-dir .
COPY models ./models
EXPOSE 8000
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"
# As `make serve`: 503 beyond 1,024 open connections; 60 s for requests in flight on shutdown.
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000", "--limit-concurrency", "1024", \
     "--timeout-graceful-shutdown", "60"]

FROM cpu AS gpu
RUN pip uninstall -y tensorflow-cpu && pip install --no-cache-dir "tensorflow[and-cuda]==2.21.0"
ENV DEVICE=gpu
