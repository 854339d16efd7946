# The banditloop image: the `banditloop` command with PostgreSQL support. compose.yaml runs it as
# `consume` (learners), `serve` (scorer), `simulate` (traffic) and `models` (table creation).
# `fast-crc` adds the C CRC-32C for kafka-python; that package is LGPL-2.1-or-later: drop the extra
# to leave it out (kafka-python then uses its slower pure-Python CRC). `confluent` adds librdkafka
# (confluent-kafka, Apache-2.0), which `consume --kafka-client auto` then uses: 1.4-2.1x the events/s
# per worker of kafka-python end to end (docs/kafka-notes.md).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
# every source folder of the package (pyproject's package-dir; tests/test_compose.py checks the list)
COPY banditloop ./banditloop
COPY core ./core
COPY operators ./operators
COPY simulators ./simulators
COPY pipeline ./pipeline
COPY serving ./serving
COPY evaluation ./evaluation
RUN pip install '.[postgres,fast-crc,confluent]' \
    && useradd --system --create-home --uid 10001 banditloop

USER banditloop
WORKDIR /home/banditloop
EXPOSE 8000
ENTRYPOINT ["banditloop"]
CMD ["--help"]
