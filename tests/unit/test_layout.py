"""Files that must agree: topics.conf and the code, compose and Settings, pom and compose."""

from __future__ import annotations

import re

import yaml

from app.kafka import topics
from app.settings import Settings
from tables.rocksdb import MIB, table_options
from tests.stack import ROOT, read_topics_conf


def test_topics_conf_matches_the_code() -> None:
    conf = read_topics_conf()
    assert {name: partitions for name, (partitions, _) in conf.items()} == {
        topics.INTAKE: topics.INTAKE_PARTITIONS,
        topics.EVENTS_DEFAULT: topics.EVENTS_PARTITIONS,
        topics.DLQ: topics.DLQ_PARTITIONS,
    }
    assert topics.required_topics(Settings().kafka_topic) == set(conf)
    for _, config in conf.values():
        assert config["cleanup.policy"] == "delete"
        assert int(config["retention.ms"]) >= 7 * 24 * 3600 * 1000


def test_table_options_bound_rocksdb_memory() -> None:
    options = table_options(Settings(rocksdb_block_cache_mb=16, rocksdb_write_buffer_mb=2))
    assert options["block_cache_size"] == 16 * MIB
    assert options["write_buffer_size"] == 2 * MIB
    # 12 partitions x (cache + compressed cache + buffers) stays far below Faust's 2 GiB each.
    per_partition = (
        options["block_cache_size"]
        + options["block_cache_compressed_size"]
        + options["write_buffer_size"] * options["max_write_buffer_number"]
    )
    assert per_partition * topics.INTAKE_PARTITIONS < 512 * MIB


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def test_compose_parses_and_names_the_stack() -> None:
    services = _compose()["services"]
    assert set(services) == {"kafka", "kafka-topics", "postgres", "redis", "migrate", "worker"}
    assert services["worker"]["command"] == ["python", "-m", "app", "worker"]
    assert services["migrate"]["command"] == ["python", "-m", "app", "migrate"]


def test_compose_variables_are_settings_and_validate() -> None:
    services = _compose()["services"]
    env = services["worker"]["environment"]
    # The worker adds only its webhook front processes to the shared variables.
    fronts = {"WEBHOOK_PROCESSES", "WEBHOOK_PORT"}
    assert {k: v for k, v in env.items() if k not in fronts} == services["migrate"]["environment"]
    unknown = {name for name in env if name.lower() not in Settings.model_fields}
    assert unknown == set()
    settings = Settings(**{name.lower(): value for name, value in env.items()})
    assert (
        settings.db_password.get_secret_value()
        == services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    )
    assert settings.db_username == services["postgres"]["environment"]["POSTGRES_USER"]
    assert settings.db_database == services["postgres"]["environment"]["POSTGRES_DB"]


def test_compose_hosts_and_ports_agree_with_settings() -> None:
    services = _compose()["services"]
    env = services["worker"]["environment"]
    settings = Settings(**{name.lower(): value for name, value in env.items()})
    defaults = Settings()

    def container_ports(service: str) -> set[int]:
        return {int(str(mapping).split(":")[-1]) for mapping in services[service].get("ports", [])}

    # The plan's default hosts are the compose service names.
    assert (defaults.db_host, defaults.redis_host) == ("postgres", "redis")
    assert settings.db_host in services
    assert settings.db_port in container_ports("postgres")
    assert settings.redis_host in services
    assert settings.redis_port in container_ports("redis")
    assert settings.port in container_ports("worker")
    assert settings.webhook_processes > 0
    assert settings.webhook_port in container_ports("worker")
    for broker in [*settings.kafka_brokers, *defaults.kafka_brokers]:
        host, port = broker.split(":")
        assert host in services
        listeners = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
        assert f"PLAINTEXT://{host}:{port}" in listeners


def test_compose_kafka_version_is_the_pinned_one() -> None:
    pom = (ROOT / "pom.xml").read_text()
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    assert match is not None
    services = _compose()["services"]
    for name in ("kafka", "kafka-topics"):
        assert services[name]["image"] == f"apache/kafka:{match[1]}"


def test_compose_publishes_kafka_postgres_and_redis_on_loopback_only() -> None:
    services = _compose()["services"]
    for name in ("kafka", "postgres", "redis"):
        for mapping in services[name].get("ports", []):
            assert str(mapping).startswith("127.0.0.1:"), f"{name} publishes {mapping}"
