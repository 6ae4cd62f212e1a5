"""Where the tests find Kafka, Postgres and Redis: the one place that hands out endpoints.

By default the suite uses the native stack that ``scripts/stack`` starts, with the
folder and ports of ``scripts/test-stack.env`` (apart from the dev stack). With
``TEST_STACK=testcontainers`` on a host with a Docker engine, the same suite runs
against containers instead; that path is untested on our machines (no Docker engine).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
STACK_SCRIPT = ROOT / "scripts" / "stack"
TOPICS_CONF = ROOT / "scripts" / "kafka" / "topics.conf"
TEST_STACK_ENV = ROOT / "scripts" / "test-stack.env"


#: Lines no logging setup of ours can format: Python's multiprocessing resource tracker, a
#: process of its own, warns (with the warning's source line) when a killed worker's helper
#: processes leave semaphores behind, and it may do so after the next worker has started.
FOREIGN_LINE = re.compile(
    r"^(\S*multiprocessing/resource_tracker\.py:\d+: UserWarning: resource_tracker: .*"
    r"|  warnings\.warn\('resource_tracker: .*)$"
)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, comments and blanks skipped."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def read_topics_conf(path: Path = TOPICS_CONF) -> dict[str, tuple[int, dict[str, str]]]:
    """topics.conf as {name: (partitions, {setting: value})}."""
    topics: dict[str, tuple[int, dict[str, str]]] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, partitions, *rest = line.split()
        config = dict(item.split("=", 1) for item in rest[0].split(",")) if rest else {}
        topics[name] = (int(partitions), config)
    return topics


#: Every port free_ports has handed out in this process: a port is released when it returns,
#: and the kernel may offer it again before the process it was meant for has bound it
#: (three workers started at once once got the same port twice).
_HANDED_OUT: set[int] = set()


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free right now, none handed out before by this process."""
    with contextlib.ExitStack() as held:
        ports: list[int] = []
        while len(ports) < count:
            sock = held.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port not in _HANDED_OUT:
                ports.append(port)
        _HANDED_OUT.update(ports)
        return ports


def free_port() -> int:
    return free_ports(1)[0]


@dataclass(frozen=True)
class Stack:
    """Endpoints of the running stack, and how to drive it."""

    kafka_bootstrap: str
    db_host: str
    db_port: int
    db_database: str
    db_username: str
    db_password: str
    redis_host: str
    redis_port: int
    #: Variables scripts/stack needs to find this stack (native only).
    script_env: Mapping[str, str] = field(default_factory=dict)
    native: bool = True
    #: More settings the service needs to reach this stack (the TLS stack's, from `env`).
    client_env: Mapping[str, str] = field(default_factory=dict)

    def service_env(self, **extra: str) -> dict[str, str]:
        """The environment a worker or command subprocess gets to reach this stack."""
        env = dict(os.environ)
        env.update(
            DB_HOST=self.db_host,
            DB_PORT=str(self.db_port),
            DB_DATABASE=self.db_database,
            DB_USERNAME=self.db_username,
            DB_PASSWORD=self.db_password,
            REDIS_HOST=self.redis_host,
            REDIS_PORT=str(self.redis_port),
            KAFKA_BROKERS=self.kafka_bootstrap,
        )
        env.update(self.client_env)
        env.update(extra)
        for name in extra:
            if name.endswith("_FILE") and name.removesuffix("_FILE") not in extra:
                env.pop(name.removesuffix("_FILE"), None)  # the file replaces the variable
        return env

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "db_host": self.db_host,
            "db_port": self.db_port,
            "db_database": self.db_database,
            "db_username": self.db_username,
            "db_password": self.db_password,
            "redis_host": self.redis_host,
            "redis_port": self.redis_port,
            "kafka_brokers": [self.kafka_bootstrap],
            "db_pool_min": 1,
            "db_pool_max": 5,
        }
        values.update({name.lower(): value for name, value in self.client_env.items()})
        values.update(overrides)
        return Settings(**values)

    def db_connect_kwargs(self, database: str | None = None) -> dict[str, Any]:
        return {
            "host": self.db_host,
            "port": self.db_port,
            "database": database or self.db_database,
            "user": self.db_username,
            "password": self.db_password,
        }

    def script(
        self, *args: str, check: bool = True, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        """Run scripts/stack (or a bin/ wrapper with ``bin=...``) against this stack."""
        if not self.native:
            raise RuntimeError("scripts/stack drives the native stack only")
        env = dict(os.environ)
        env.update(self.script_env)
        return subprocess.run(
            [str(STACK_SCRIPT), *args],
            env=env,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def tool(
        self, name: str, *args: str, timeout: float = 120, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run one of the bin/ wrappers of Kafka's tools."""
        env = dict(os.environ)
        env.update(self.script_env)
        return subprocess.run(
            [str(ROOT / "bin" / name), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kw,
        )


def run_script(
    env: Mapping[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run scripts/stack with exactly ``env``; the caller checks the outcome."""
    return subprocess.run(
        ["/bin/bash", str(STACK_SCRIPT), *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def native_stack_env() -> dict[str, str]:
    """The test stack's variables: scripts/test-stack.env, overridden by the environment."""
    env = read_env_file(TEST_STACK_ENV)
    for key in env:
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def native_stack(script_env: Mapping[str, str]) -> Stack:
    """Bring the native stack up (a no-op when it runs), migrate, and describe it."""
    env = dict(os.environ)
    env.update(script_env)
    subprocess.run([str(STACK_SCRIPT), "up"], env=env, check=True, timeout=600)
    stack = Stack(
        kafka_bootstrap=f"127.0.0.1:{script_env['KAFKA_PORT']}",
        db_host="127.0.0.1",
        db_port=int(script_env["DB_PORT"]),
        db_database=env.get("DB_DATABASE", "collectioncrm"),
        db_username=env.get("DB_USERNAME", "postgres"),
        db_password=env.get("DB_PASSWORD", "admin_password"),
        redis_host="127.0.0.1",
        redis_port=int(script_env["REDIS_PORT"]),
        script_env=dict(script_env),
    )
    migrate(stack)
    return stack


def exported(output: str) -> dict[str, str]:
    """The variables of `scripts/stack env`'s ``export A=B C=D`` lines."""
    variables: dict[str, str] = {}
    for line in output.splitlines():
        words = shlex.split(line)
        if words and words[0] == "export":
            for word in words[1:]:
                name, _, value = word.partition("=")
                variables[name] = value
    return variables


@contextlib.contextmanager
def native_tls_stack(state: Path, **script_env: str) -> Iterator[Stack]:
    """A TLS-only stack of its own (STACK_TLS=1) in ``state``, on free ports; wiped on exit.

    Its ``client_env`` holds what `scripts/stack env` prints to turn TLS on.
    """
    kafka, controller, db, redis = free_ports(4)
    script_env = {
        "PAYMENTS_STATE_DIR": str(state),
        "STACK_TLS": "1",
        "KAFKA_PORT": str(kafka),
        "KAFKA_CONTROLLER_PORT": str(controller),
        "DB_PORT": str(db),
        "REDIS_PORT": str(redis),
        "KAFKA_HEAP_OPTS": "-Xms128m -Xmx384m",
        **script_env,
    }
    env = {**os.environ, **script_env}
    try:
        up = run_script(env, "up")
        assert up.returncode == 0, up.stdout + up.stderr
        printed = run_script(env, "env")
        assert printed.returncode == 0, printed.stderr
        variables = exported(printed.stdout)
        stack = Stack(
            kafka_bootstrap=variables.pop("KAFKA_BROKERS"),
            db_host=variables.pop("DB_HOST"),
            db_port=int(variables.pop("DB_PORT")),
            db_database=variables.pop("DB_DATABASE"),
            db_username=variables.pop("DB_USERNAME"),
            db_password=variables.pop("DB_PASSWORD"),
            redis_host=variables.pop("REDIS_HOST"),
            redis_port=int(variables.pop("REDIS_PORT")),
            script_env=script_env,
            client_env=variables,
        )
        migrate(stack)
        yield stack
    finally:
        run_script(env, "reset", timeout=120)


def migrate(stack: Stack) -> None:
    subprocess.run(
        [sys.executable, "-m", "app", "migrate"],
        env=stack.service_env(),
        check=True,
        timeout=120,
        capture_output=True,
    )


@contextlib.contextmanager
def testcontainers_stack() -> Iterator[Stack]:  # pragma: no cover - needs a Docker engine
    """The same stack in containers (pip install '.[docker]'); untested here."""
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer
    from testcontainers.redis import RedisContainer

    kafka_version = "4.0.2"
    with (
        KafkaContainer(f"apache/kafka:{kafka_version}").with_kraft() as kafka,
        PostgresContainer(
            "postgres:15", username="postgres", password="admin_password", dbname="collectioncrm"
        ) as pg,
        RedisContainer("redis:7") as redis,
    ):
        stack = Stack(
            kafka_bootstrap=kafka.get_bootstrap_server(),
            db_host=pg.get_container_host_ip(),
            db_port=int(pg.get_exposed_port(5432)),
            db_database="collectioncrm",
            db_username="postgres",
            db_password="admin_password",
            redis_host=redis.get_container_host_ip(),
            redis_port=int(redis.get_exposed_port(6379)),
            native=False,
        )
        _create_topics(stack)
        migrate(stack)
        yield stack


def _create_topics(stack: Stack) -> None:  # pragma: no cover - needs a Docker engine
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [
                    NewTopic(name, partitions, 1, topic_configs=config)
                    for name, (partitions, config) in read_topics_conf().items()
                ]
            )
        finally:
            await admin.close()

    asyncio.run(create())


# --- a worker process -------------------------------------------------------------


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    #: Where this process's lines start in ``log_path`` (a restarted worker appends to it).
    log_start: int = 0
    #: Its METRICS_PORT (0: none).
    metrics_port: int = 0

    def get(
        self, path: str, timeout: float = 10, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        request = urllib.request.Request(self.base_url + path, headers=headers or {})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def post(
        self, path: str, body: bytes, headers: dict[str, str], timeout: float = 30
    ) -> tuple[int, dict[str, str], bytes]:
        """POST ``body``; return the status, headers and body, whatever the status."""
        request = urllib.request.Request(  # noqa: S310  # our own worker on loopback
            self.base_url + path,
            data=body,
            headers={"Content-Type": "application/json", **headers},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def wait_web(self, timeout: float = 60) -> None:
        """Wait until the worker's web server answers (any status)."""

        def answers() -> bool:
            self.assert_alive()
            try:
                self.get("/health", timeout=2)
            except OSError:
                return False
            return True

        wait_for(answers, timeout=timeout, what="the worker's web server")

    def log(self) -> str:
        """What this process wrote to the log (its fronts included)."""
        with self.log_path.open("rb") as log:
            log.seek(self.log_start)
            return log.read().decode(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        """The log's lines as JSON objects (LOG_FORMAT=json); any other line fails the test.

        A last line without its newline is still being written: it is left out.
        """
        *complete, _partial = self.log().split("\n")
        records = []
        for number, line in enumerate(complete, 1):
            if FOREIGN_LINE.match(line):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise AssertionError(f"{self.log_path}:{number} is not JSON: {line!r}") from None
            assert isinstance(record, dict), f"{self.log_path}:{number}: {line!r}"
            records.append(record)
        return records

    def log_messages(self) -> list[str]:
        """The ``message`` of every log line."""
        return [record["message"] for record in self.log_records()]

    def logged(self, text: str) -> bool:
        """True when a log line's message contains ``text``."""
        return any(text in message for message in self.log_messages())

    def assert_alive(self) -> None:
        """Fail with the end of the worker's log if its process has exited."""
        assert self.process.poll() is None, self.log()[-4000:]


@contextlib.contextmanager
def run_worker(stack: Stack, folder: Path, **env: str) -> Iterator[Worker]:
    """Start ``python -m app worker`` on a free port; stop it (SIGTERM) on exit."""
    # METRICS_PORT: none unless a test asks for one ("free"); never the plan's 9090, as
    # workers run side by side.
    wanted = env.get("METRICS_PORT", "0")
    port, metrics_port = free_ports(2) if wanted == "free" else (free_port(), int(wanted))
    env["METRICS_PORT"] = str(metrics_port)
    log_path = folder / "worker.log"
    worker_id = env.pop("WORKER_ID", f"test-worker-{port}")
    with log_path.open("ab") as log_file:  # a restarted worker appends to the same log
        log_start = log_file.tell()
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "worker"],
            env=stack.service_env(
                PORT=str(port),
                WEB_BIND="127.0.0.1",
                DATA_DIR=str(folder / "data"),
                WORKER_ID=worker_id,
                **env,
            ),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    worker = Worker(
        process,
        f"http://127.0.0.1:{port}",
        log_path,
        log_start,
        metrics_port=int(env["METRICS_PORT"]),
    )
    try:
        yield worker
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def wait_for(predicate: Any, timeout: float, interval: float = 0.5, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


# --- Prometheus -------------------------------------------------------------------


@contextlib.contextmanager
def prometheus(stack: Stack, targets: list[str]) -> Iterator[str]:
    """The stack's Prometheus (``scripts/stack up prometheus``) scraping only ``targets``.

    It starts with empty storage, so no series of an earlier run answers a query; its
    scrape interval is PROMETHEUS_SCRAPE_INTERVAL (1 s in scripts/test-stack.env). Yields
    its base URL and stops it on exit.
    """
    state = Path(stack.script_env.get("PAYMENTS_STATE_DIR", ".state"))
    home = state if state.is_absolute() else ROOT / state
    folder = home / "prometheus"
    stack.script("down", "prometheus")
    shutil.rmtree(folder / "data", ignore_errors=True)
    shutil.rmtree(folder / "targets", ignore_errors=True)
    (folder / "targets").mkdir(parents=True)
    (folder / "targets" / "tests.json").write_text(json.dumps([{"targets": targets}]))
    stack.script("up", "prometheus")
    url = f"http://127.0.0.1:{stack.script_env['PROMETHEUS_PORT']}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as answer:  # noqa: S310
                return bool(answer.status == 200)
        except OSError:  # 503 while its storage opens, or not listening yet
            return False

    try:
        wait_for(ready, timeout=60, what="Prometheus ready (/-/ready)")
        yield url
    finally:
        stack.script("down", "prometheus")
