# The worker image for docker-compose.yml (hosts with a Docker engine; untested here).
FROM python:3.11-slim
WORKDIR /srv/payment-service
COPY pyproject.toml requirements.lock ./
COPY app ./app
COPY agents ./agents
COPY tables ./tables
COPY web ./web
COPY migrations ./migrations
COPY docs/openapi.yaml ./docs/openapi.yaml
RUN pip install --no-cache-dir -c requirements.lock . \
 && useradd --system --home-dir /var/lib/payment-service --create-home payments
USER payments
EXPOSE 3004 3005
CMD ["python", "-m", "app", "worker"]
