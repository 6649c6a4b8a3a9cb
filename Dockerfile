# Safety Guard gateway image: `safeguard serve|ingest|supervise|api|migrate`.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY protocol ./protocol
COPY gateway ./gateway
COPY simulators ./simulators
COPY safeguard ./safeguard
COPY dashboards ./dashboards
RUN pip install --no-cache-dir . && useradd --system --uid 10001 safeguard
USER safeguard
EXPOSE 8000
ENTRYPOINT ["safeguard"]
CMD ["serve"]
