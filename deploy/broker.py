"""A real single-node Apache Kafka 4.x broker (KRaft, combined broker+controller) on this host.

The broker is a separate JVM process, started in its own session so that it outlives the
process that started it: ``llm-router broker start`` returns with the broker running, and a
later ``llm-router broker stop`` (another process) finds it again through the pid file in the
data directory.

The broker's jars come from an unpacked Apache Kafka distribution when
``BrokerSettings.kafka_home`` is set, otherwise Maven resolves them once, for the pinned
version, into ``BrokerSettings.cache_dir`` (see :func:`ensure_jars`).

Example::

    from pathlib import Path

    from deploy.broker import KafkaBroker
    from schemas.settings import BrokerSettings

    with KafkaBroker(BrokerSettings(data_dir=Path("var/kafka"))) as broker:
        print(broker.bootstrap_servers)  # -> "127.0.0.1:9092"

With a :class:`SaslListener` the broker also serves SASL_PLAINTEXT clients on a second port
(PLAIN and/or SCRAM-SHA-256/512), beside the plaintext listener that the readiness probe, the
controller and inter-broker traffic keep using::

    sasl = SaslListener(port=19094, users={"router": "s3cret"})
    with KafkaBroker(BrokerSettings(data_dir=Path("var/kafka")), sasl=sasl) as broker:
        print(broker.sasl_bootstrap_servers)  # -> "127.0.0.1:19094"

Layout of the data directory (kept across stop/start, never reformatted)::

    data_dir/
        server.properties   written on every start from the settings (mode 0600: it
                            holds the SASL users' passwords when there are any)
        scram-users         names of the SCRAM users created when the storage was formatted
        log4j2.properties   written on every start
        cluster.id          the KRaft cluster id, chosen once
        broker.pid          while a broker runs
        broker.log          the JVM's stdout and stderr (the broker's own log)
        data/               log.dirs: topic partitions and the KRaft metadata log

Error hierarchy::

    RouterError (schemas.errors)
    └── BrokerError              (retriable = False)
        ├── JarResolutionError   Java or Maven missing, or the jars cannot be resolved
        └── BrokerStartError     the broker exited during start; carries the log tail
            └── BrokerStartTimeout  (retriable) it did not answer within start_timeout_s
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import errno
import fcntl
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, TypedDict

from pydantic import SecretStr

from schemas.errors import RouterError
from schemas.settings import BrokerSettings

__all__ = [
    "BrokerError",
    "BrokerStartError",
    "BrokerStartTimeout",
    "BrokerStatus",
    "JarResolutionError",
    "KafkaBroker",
    "SaslListener",
    "SaslMechanism",
    "SaslProtocol",
    "ensure_jars",
]

logger = logging.getLogger(__name__)


class BrokerError(RouterError):
    """Base class of every error of the embedded broker."""


class JarResolutionError(BrokerError):
    """Java or Maven is missing, or the broker's jars cannot be resolved."""


class BrokerStartError(BrokerError):
    """The broker process exited before it answered; ``log_tail`` holds the end of its log."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        if log_tail:
            message = f"{message}\n--- last lines of the broker log ---\n{log_tail}"
        super().__init__(message)
        self.log_tail = log_tail


class BrokerStartTimeout(BrokerStartError):
    """The broker did not answer within ``start_timeout_s`` (and was stopped again)."""

    retriable = True


# Seconds a clean shutdown (SIGTERM) may take before SIGKILL.
_STOP_TIMEOUT_S = 30.0
_MAVEN_TIMEOUT_S = 900.0
_FORMAT_TIMEOUT_S = 120.0
_LOG_TAIL_LINES = 40
# broker.log is moved aside to broker.log.1 at start once it is this large.
_LOG_ROTATE_BYTES = 20 * 1024 * 1024
_LOG4J_VERSION = "2.24.3"
_NODE_ID = 1

_SERVER_CLASS = "kafka.Kafka"
_STORAGE_TOOL_CLASS = "kafka.tools.StorageTool"

# The broker log goes to stdout, which start() redirects into data_dir/broker.log.
_LOG4J2_PROPERTIES = """\
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
"""


class BrokerStatus(TypedDict):
    """What ``KafkaBroker.status()`` reports (a dict, so that it prints as JSON)."""

    running: bool
    pid: int | None
    # The broker answered a Metadata request just now.
    ready: bool
    bootstrap_servers: str
    data_dir: Path
    log_file: Path


SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
_SASL_MECHANISMS: tuple[SaslMechanism, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SaslProtocol = Literal["SASL_PLAINTEXT", "SASL_SSL"]
# Quoted into a JAAS config and into the storage tool's --add-scram argument: keep them plain.
_SASL_USER_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@-"
)
_SASL_PASSWORD_FORBIDDEN = frozenset('"\\,[]=;')


@dataclasses.dataclass(frozen=True)
class SaslListener:
    """A SASL listener on ``port`` for ``users`` (name → password): SASL_PLAINTEXT, or
    SASL_SSL when ``keystore`` is given.

    ``mechanisms`` are the SASL mechanisms it accepts. PLAIN users live in the listener's
    JAAS config (in ``server.properties``); SCRAM users are created in the KRaft metadata when
    the storage is formatted, i.e. on the first start of a data directory: users added later
    to an existing data directory do not exist for SCRAM (a warning says so).

    User names are letters, digits and ``._@-``; passwords are printable ASCII without
    spaces or any of ``"\\,[]=;``. Passwords are kept as :class:`~pydantic.SecretStr`, so
    they do not show in reprs or logs.

    ``keystore`` is a PEM file with the broker's private key (PKCS#8, unencrypted) and its
    certificate chain (Kafka's ``ssl.keystore.type=PEM``); clients then connect with
    ``security_protocol=SASL_SSL`` and the CA in ``ssl_cafile``. SCRAM users are
    cluster-wide: a user of one listener exists on every listener that enables SCRAM.

    Example::

        SaslListener(port=19094, users={"router": "s3cret"}, mechanisms=("PLAIN",))
        SaslListener(port=19095, users={"router": "s3cret"}, keystore=Path("broker.pem"))
    """

    port: int
    users: Mapping[str, SecretStr | str] = dataclasses.field(repr=False)
    mechanisms: tuple[SaslMechanism, ...] = ("PLAIN", "SCRAM-SHA-256")
    keystore: Path | None = None

    @property
    def protocol(self) -> SaslProtocol:
        """The listener's security protocol, which is also its listener name."""
        return "SASL_SSL" if self.keystore is not None else "SASL_PLAINTEXT"

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"SASL port must be in 1..65535, got {self.port}")
        if not self.users:
            raise ValueError("a SASL listener needs at least one user")
        if not self.mechanisms or any(m not in _SASL_MECHANISMS for m in self.mechanisms):
            raise ValueError(
                f"SASL mechanisms must be some of {list(_SASL_MECHANISMS)}, "
                f"got {list(self.mechanisms)}"
            )
        users: dict[str, SecretStr] = {}
        for name, password in self.users.items():
            secret = password if isinstance(password, SecretStr) else SecretStr(password)
            value = secret.get_secret_value()
            if not name or not set(name) <= _SASL_USER_CHARS:
                raise ValueError(
                    f"SASL user name {name!r} must be letters, digits and ._@- only"
                )
            if (
                not value
                or any(not ("!" <= c <= "~") for c in value)
                or set(value) & _SASL_PASSWORD_FORBIDDEN
            ):
                raise ValueError(
                    f"the password of SASL user {name!r} must be printable ASCII without "
                    'spaces or any of "\\,[]=;'
                )
            users[name] = secret
        object.__setattr__(self, "users", users)
        object.__setattr__(self, "mechanisms", tuple(dict.fromkeys(self.mechanisms)))

    @property
    def scram_mechanisms(self) -> tuple[SaslMechanism, ...]:
        return tuple(m for m in self.mechanisms if m.startswith("SCRAM"))

    def _password(self, name: str) -> str:
        secret = self.users[name]
        assert isinstance(secret, SecretStr)
        return secret.get_secret_value()

    def server_properties(self) -> dict[str, str]:
        """The listener-scoped broker settings: enabled mechanisms and their JAAS configs, and
        for SASL_SSL the PEM keystore."""
        prefix = f"listener.name.{self.protocol.lower()}"
        properties = {f"{prefix}.sasl.enabled.mechanisms": ",".join(self.mechanisms)}
        if self.keystore is not None:
            properties[f"{prefix}.ssl.keystore.type"] = "PEM"
            properties[f"{prefix}.ssl.keystore.location"] = str(self.keystore.resolve())
        if "PLAIN" in self.mechanisms:
            users = " ".join(f'user_{name}="{self._password(name)}"' for name in self.users)
            properties[f"{prefix}.plain.sasl.jaas.config"] = (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"
            )
        for mechanism in self.scram_mechanisms:
            properties[f"{prefix}.{mechanism.lower()}.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            )
        return properties

    def scram_credentials(self) -> list[tuple[SaslMechanism, str, str]]:
        """(mechanism, user, the storage tool's ``--add-scram`` value) per SCRAM user."""
        return [
            (mechanism, name, f'{mechanism}=[name={name},password="{self._password(name)}"]')
            for mechanism in self.scram_mechanisms
            for name in self.users
        ]


# --------------------------------------------------------------------------- jars


def _pom_xml(settings: BrokerSettings) -> str:
    # kafka_<scala> pulls in the whole server at runtime scope; log4j-core and the slf4j 1.x
    # binding are what the distribution adds so that the broker actually logs.
    return f"""\
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>llm-router</groupId>
  <artifactId>kafka-broker-jars</artifactId>
  <version>{settings.kafka_version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{settings.scala_version}</artifactId>
      <version>{settings.kafka_version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{_LOG4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{_LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""


def _main_jar_name(settings: BrokerSettings) -> str:
    return f"kafka_{settings.scala_version}-{settings.kafka_version}.jar"


def _run_maven(mvn: str, workdir: Path, offline: bool) -> subprocess.CompletedProcess[str]:
    cmd = [mvn, "-q", "-B"]
    if offline:
        cmd.append("-o")
    cmd += [
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={workdir / 'libs'}",
    ]
    logger.debug("running %s in %s", cmd, workdir)
    try:
        return subprocess.run(
            cmd,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_MAVEN_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise JarResolutionError(
            f"Maven did not resolve the Kafka jars within {_MAVEN_TIMEOUT_S:.0f}s: {cmd}"
        ) from exc


def ensure_jars(settings: BrokerSettings) -> Path:
    """Return the directory holding the broker's jars, resolving them with Maven if needed.

    With ``kafka_home`` set that is ``$KAFKA_HOME/libs``. Otherwise the jars of
    ``kafka_<scala_version>:<kafka_version>`` are copied once into
    ``<cache_dir>/kafka_<scala>-<version>/libs``: Maven runs offline first (enough when
    ``~/.m2`` has them) and online after that; the result is built in a temporary directory
    and renamed into place, so an interrupted or concurrent resolution leaves no half cache.
    """
    if settings.kafka_home is not None:
        libs = settings.kafka_home.expanduser().resolve() / "libs"
        if not any(libs.glob("kafka_*.jar")):
            raise JarResolutionError(f"kafka_home has no kafka_*.jar under {libs}")
        return libs

    cache_dir = settings.cache_dir.expanduser().resolve()
    target = cache_dir / f"kafka_{settings.scala_version}-{settings.kafka_version}"
    libs = target / "libs"
    if (libs / _main_jar_name(settings)).is_file():
        return libs

    mvn = shutil.which("mvn")
    if mvn is None:
        raise JarResolutionError(
            "Maven (mvn) is not on PATH, so the Kafka broker jars cannot be resolved; install "
            "Maven or set broker.kafka_home to an unpacked Apache Kafka distribution"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    logger.info(
        "resolving Apache Kafka %s (scala %s) jars with Maven into %s; "
        "the first resolution can take a minute",
        settings.kafka_version,
        settings.scala_version,
        target,
    )
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix=".resolve-", dir=cache_dir))
    try:
        (workdir / "pom.xml").write_text(_pom_xml(settings), encoding="utf-8")
        result = _run_maven(mvn, workdir, offline=True)
        if result.returncode != 0:
            logger.info("the jars are not all in the local Maven repository; resolving online")
            result = _run_maven(mvn, workdir, offline=False)
        if result.returncode != 0 or not (workdir / "libs" / _main_jar_name(settings)).is_file():
            output = _tail((result.stdout + result.stderr).splitlines(), _LOG_TAIL_LINES)
            raise JarResolutionError(
                f"Maven could not resolve org.apache.kafka:kafka_{settings.scala_version}:"
                f"{settings.kafka_version} (exit status {result.returncode}):\n{output}"
            )
        (workdir / "pom.xml").replace(workdir / "libs.pom.xml")
        try:
            workdir.rename(target)
        except OSError as exc:
            # Another process finished first: keep its copy.
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    logger.info("resolved the Kafka jars in %.1fs", time.monotonic() - started)
    return libs


# --------------------------------------------------------------------------- protocol probe


def _kafka_request(sock: socket.socket, api_key: int, api_version: int, body: bytes) -> bytes:
    client_id = b"llm-router-probe"
    header = struct.pack(">hhih", api_key, api_version, 1, len(client_id)) + client_id
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _recv_exactly(sock, 4))[0]
    return _recv_exactly(sock, size)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        chunks += chunk
    return bytes(chunks)


def _probe(host: str, port: int, timeout_s: float, cluster_id: str | None = None) -> bool:
    """Whether the broker serves clients: ApiVersions succeeds and Metadata lists a broker.

    Metadata leaves out fenced brokers, so a positive answer means topics can be created.
    With ``cluster_id`` the answer must come from that cluster, not from whatever else
    listens on the port. A raw request keeps this synchronous and free of client state.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            # ApiVersions v0: empty body; response: correlation id, error code, ...
            response = _kafka_request(sock, api_key=18, api_version=0, body=b"")
            if struct.unpack_from(">h", response, 4)[0] != 0:
                return False
            # Metadata v4 (the oldest Kafka 4 serves): topics = [], no auto-creation.
            response = _kafka_request(sock, api_key=3, api_version=4, body=b"\x00" * 5)
    except (OSError, struct.error):
        return False
    try:
        brokers, answered_cluster_id = _parse_metadata_v4(response)
    except (struct.error, UnicodeDecodeError):
        return False
    return brokers > 0 and (cluster_id is None or answered_cluster_id == cluster_id)


def _parse_metadata_v4(response: bytes) -> tuple[int, str | None]:
    """(number of live brokers, cluster id) of a Metadata v4 response."""
    # correlation id, throttle_time_ms, brokers: [node_id, host, port, rack], cluster_id, ...
    offset = 8
    (count,) = struct.unpack_from(">i", response, offset)
    offset += 4
    for _ in range(count):
        offset += 4  # node_id
        (host_len,) = struct.unpack_from(">h", response, offset)
        offset += 2 + host_len + 4  # host, port
        (rack_len,) = struct.unpack_from(">h", response, offset)
        offset += 2 + max(rack_len, 0)
    (id_len,) = struct.unpack_from(">h", response, offset)
    if id_len < 0:
        return count, None
    offset += 2
    return count, response[offset : offset + id_len].decode("utf-8")


# --------------------------------------------------------------------------- processes


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _process_is_our_broker(pid: int, properties: Path) -> bool:
    """Guard against a recycled pid: the process must run kafka.Kafka on our properties."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return _process_alive(pid)
    except OSError:
        return True  # no /proc (macOS): trust the pid file
    return _SERVER_CLASS.encode() in cmdline and str(properties).encode() in cmdline


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask Linux for SIGTERM when the parent goes.
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _tail(lines: list[str], count: int) -> str:
    return "\n".join(lines[-count:])


def _cause(lines: list[str]) -> str:
    """': <root cause>' from a broker log, the innermost exception first, or ''."""
    causes = [line.strip() for line in lines if line.startswith("Caused by:")]
    if causes:
        return ": " + causes[-1].removeprefix("Caused by:").strip()
    errors = [line.strip() for line in lines if " ERROR " in line or " FATAL " in line]
    return f": {errors[0]}" if errors else ""


def _new_cluster_id() -> str:
    # Kafka's Uuid.randomUuid().toString(): url-safe base64 of 16 random bytes, unpadded,
    # and like Kafka never with a leading "-" (the storage tool would read it as an option).
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class KafkaBroker:
    """A single-node Kafka broker process bound to ``settings.host``.

    ``start()`` returns once the broker serves clients; ``stop()`` shuts it down cleanly. Both
    are idempotent, and both work on a broker that another process started (through the pid
    file in ``data_dir``). Data persists across stop/start.

    Topics are not auto-created (``auto.create.topics.enable=false``): the router creates its
    topics explicitly (``llm-router topics create``), and a misspelt topic name should fail
    rather than quietly get a one-partition topic. Set
    ``extra_config={"auto.create.topics.enable": "true"}`` to change that.

    Example::

        broker = KafkaBroker(BrokerSettings(data_dir=Path("var/kafka"), port=19092))
        broker.start()
        try:
            ...  # KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        finally:
            broker.stop()
    """

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        die_with_parent: bool = False,
        sasl: SaslListener | Sequence[SaslListener] | None = None,
    ) -> None:
        """``die_with_parent=True`` (Linux; test fixtures) SIGTERMs the broker when the
        thread that started it exits, so a killed test run leaves no JVM behind. The default
        lets the broker outlive its starter, as ``llm-router broker start`` needs.

        ``sasl`` adds SASL listeners (see :class:`SaslListener`): at most one SASL_PLAINTEXT
        and one SASL_SSL."""
        listeners = (sasl,) if isinstance(sasl, SaslListener) else tuple(sasl or ())
        ports = [listener.port for listener in listeners]
        for port in ports:
            if port in (settings.port, settings.controller_port) or ports.count(port) > 1:
                raise ValueError(
                    f"the SASL port {port} is already the broker's, the controller's or "
                    "another listener's port"
                )
        protocols = [listener.protocol for listener in listeners]
        if len(set(protocols)) < len(protocols):
            raise ValueError(f"at most one SASL listener per protocol, got {protocols}")
        self._settings = settings
        self._die_with_parent = die_with_parent
        self._listeners = listeners
        self._data_dir = settings.data_dir.expanduser().resolve()
        # Set only in the process that started the broker: lets it reap the child.
        self._process: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ properties

    @property
    def settings(self) -> BrokerSettings:
        return self._settings

    @property
    def bootstrap_servers(self) -> str:
        return f"{self._settings.host}:{self._settings.port}"

    @property
    def sasl(self) -> SaslListener | None:
        return self._listeners[0] if self._listeners else None

    @property
    def sasl_listeners(self) -> tuple[SaslListener, ...]:
        return self._listeners

    @property
    def sasl_bootstrap_servers(self) -> str:
        """``host:port`` of the (first) SASL listener; ValueError when there is none."""
        if not self._listeners:
            raise ValueError("this broker has no SASL listener")
        return f"{self._settings.host}:{self._listeners[0].port}"

    def bootstrap_servers_for(self, protocol: SaslProtocol) -> str:
        """``host:port`` of the SASL listener speaking ``protocol``; ValueError if none."""
        for listener in self._listeners:
            if listener.protocol == protocol:
                return f"{self._settings.host}:{listener.port}"
        raise ValueError(f"this broker has no {protocol} listener")

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def log_file(self) -> Path:
        return self._data_dir / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self._data_dir / "broker.pid"

    @property
    def properties_file(self) -> Path:
        return self._data_dir / "server.properties"

    @property
    def log_dirs(self) -> Path:
        return self._data_dir / "data"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the broker unless it already runs; return once it serves clients.

        Raises :class:`BrokerStartError` (with the tail of the broker log) if the process
        exits, :class:`BrokerStartTimeout` if it does not answer within ``start_timeout_s``.
        """
        self._data_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            pid = self._running_pid()
            if pid is not None:
                logger.info(
                    "Kafka broker already running (pid %d) at %s", pid, self.bootstrap_servers
                )
                self._wait_ready(pid)
                return
            self._start_locked()

    def stop(self, timeout_s: float = _STOP_TIMEOUT_S) -> None:
        """Shut the broker down cleanly (SIGTERM), SIGKILL after ``timeout_s``; idempotent."""
        if not self._data_dir.is_dir():
            return
        with self._lock():
            self._signal_and_wait(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would (for fault-injection tests); idempotent."""
        if not self._data_dir.is_dir():
            return
        with self._lock():
            self._signal_and_wait(signal.SIGKILL, _STOP_TIMEOUT_S)

    def status(self) -> BrokerStatus:
        """Whether a broker runs on this data directory, and whether it answers."""
        pid = self._running_pid() if self._data_dir.is_dir() else None
        ready = pid is not None and _probe(
            self._settings.host, self._settings.port, 1.0, self._cluster_id()
        )
        return {
            "running": pid is not None,
            "pid": pid,
            "ready": ready,
            "bootstrap_servers": self.bootstrap_servers,
            "data_dir": self._data_dir,
            "log_file": self.log_file,
        }

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        sasl = f", sasl={list(self._listeners)!r}" if self._listeners else ""
        return (
            f"KafkaBroker(bootstrap_servers={self.bootstrap_servers!r}, "
            f"data_dir={self._data_dir}{sasl})"
        )

    # ------------------------------------------------------------------ internals

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        # Serialises start/stop/kill of one data directory across processes.
        with open(self._data_dir / ".broker.lock", "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text(encoding="ascii").strip())
        except (FileNotFoundError, ValueError):
            return None

    def _running_pid(self) -> int | None:
        """The pid of the live broker of this data directory; clears a stale pid file."""
        if self._process is not None and self._process.poll() is not None:
            self._process = None
        pid = self._read_pid()
        if pid is None:
            return None
        if _process_alive(pid) and _process_is_our_broker(pid, self.properties_file):
            return pid
        logger.info("removing stale broker pid file %s (pid %d)", self.pid_file, pid)
        self.pid_file.unlink(missing_ok=True)
        return None

    def _exited(self, pid: int) -> bool:
        if self._process is not None and self._process.pid == pid:
            return self._process.poll() is not None
        return not _process_alive(pid)

    def _signal_and_wait(self, sig: signal.Signals, timeout_s: float) -> None:
        pid = self._running_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return
        logger.info("stopping Kafka broker pid %d with %s", pid, sig.name)
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if not self._wait_exit(pid, timeout_s) and sig != signal.SIGKILL:
            logger.warning(
                "Kafka broker pid %d did not stop within %.0fs; sending SIGKILL", pid, timeout_s
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_exit(pid, _STOP_TIMEOUT_S)
        if not self._exited(pid):
            raise BrokerError(f"Kafka broker pid {pid} is still running after SIGKILL")
        self._process = None
        self.pid_file.unlink(missing_ok=True)
        logger.info("Kafka broker pid %d stopped in %.1fs", pid, time.monotonic() - started)

    def _wait_exit(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        if self._process is not None and self._process.pid == pid:
            try:
                self._process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                return False
            return True
        while time.monotonic() < deadline:
            if not _process_alive(pid):
                return True
            time.sleep(0.1)
        return not _process_alive(pid)

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise JarResolutionError("java is not on PATH; the Kafka broker needs Java 17 or later")
        return java

    def _classpath(self) -> str:
        return str(ensure_jars(self._settings) / "*")

    def _server_properties(self) -> dict[str, str]:
        s = self._settings
        listeners = [f"PLAINTEXT://{s.host}:{s.port}"]
        protocols = ["CONTROLLER:PLAINTEXT", "PLAINTEXT:PLAINTEXT"]
        for listener in self._listeners:
            listeners.append(f"{listener.protocol}://{s.host}:{listener.port}")
            protocols.append(f"{listener.protocol}:{listener.protocol}")
        properties = {
            "process.roles": "broker,controller",
            "node.id": str(_NODE_ID),
            "controller.quorum.voters": f"{_NODE_ID}@{s.host}:{s.controller_port}",
            "listeners": ",".join([*listeners, f"CONTROLLER://{s.host}:{s.controller_port}"]),
            "advertised.listeners": ",".join(listeners),
            "controller.listener.names": "CONTROLLER",
            # The controller and the broker itself talk plaintext; so does the readiness probe.
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(protocols),
            "log.dirs": str(self.log_dirs),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "auto.create.topics.enable": "false",
            "delete.topic.enable": "true",
            "offsets.topic.replication.factor": "1",
            # 50 partitions by default: slow to create on a small machine, useless on one node.
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
        }
        for listener in self._listeners:
            properties.update(listener.server_properties())
        properties.update(s.extra_config)
        return properties

    def _write_config(self) -> None:
        lines = ["# Written by llm-router (deploy/broker.py) on every start; edits are lost."]
        lines += [f"{key}={value}" for key, value in self._server_properties().items()]
        # Owner-only before the passwords of SASL users go in.
        fd = os.open(self.properties_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        (self._data_dir / "log4j2.properties").write_text(_LOG4J2_PROPERTIES, encoding="utf-8")

    def _jvm_args(self) -> list[str]:
        return [
            f"-Xmx{self._settings.heap_mb}m",
            f"-Xms{min(self._settings.heap_mb, 256)}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self._data_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self._data_dir}",
        ]

    def _format_storage(self, java: str, classpath: str) -> None:
        """Format log.dirs once; an existing data directory is never reformatted.

        SCRAM users of the SASL listener are created here, so only on the first start.
        """
        scram_users = sorted(
            {name for listener in self._listeners if listener.scram_mechanisms
             for name in listener.users}
        )
        scram_file = self._data_dir / "scram-users"
        if (self.log_dirs / "meta.properties").is_file():
            created = scram_file.read_text(encoding="utf-8").split() if scram_file.is_file() else []
            missing = sorted(set(scram_users) - set(created))
            if missing:
                logger.warning(
                    "SCRAM users %s do not exist: SCRAM users are created only when the storage "
                    "is formatted, and %s was formatted before; use a new data directory",
                    missing,
                    self.log_dirs,
                )
            return
        id_file = self._data_dir / "cluster.id"
        cluster_id = id_file.read_text(encoding="ascii").strip() if id_file.is_file() else ""
        if not cluster_id or cluster_id.startswith("-"):
            cluster_id = _new_cluster_id()
            id_file.write_text(cluster_id + "\n", encoding="ascii")
        cmd = [
            java,
            *self._jvm_args(),
            "-cp",
            classpath,
            _STORAGE_TOOL_CLASS,
            "format",
            "--cluster-id",
            cluster_id,
            "--config",
            str(self.properties_file),
            "--ignore-formatted",
        ]
        # A user on two listeners is created once (the first listener's password wins).
        added: set[tuple[str, str]] = set()
        for listener in self._listeners:
            for mechanism, name, arg in listener.scram_credentials():
                if (mechanism, name) not in added:
                    added.add((mechanism, name))
                    cmd += ["--add-scram", arg]
        logger.info("formatting Kafka storage in %s (cluster id %s)", self.log_dirs, cluster_id)
        try:
            result = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_FORMAT_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerStartError(
                f"formatting Kafka storage in {self.log_dirs} took over {_FORMAT_TIMEOUT_S:.0f}s"
            ) from exc
        if result.returncode != 0:
            output = _tail((result.stdout + result.stderr).splitlines(), _LOG_TAIL_LINES)
            raise BrokerStartError(
                f"formatting Kafka storage in {self.log_dirs} failed "
                f"(exit status {result.returncode})",
                output,
            )
        scram_file.write_text("".join(f"{name}\n" for name in scram_users), encoding="utf-8")

    def _open_log(self) -> IO[bytes]:
        log_file = self.log_file
        with contextlib.suppress(FileNotFoundError):
            if log_file.stat().st_size > _LOG_ROTATE_BYTES:
                log_file.replace(log_file.with_name(log_file.name + ".1"))
        return open(log_file, "ab")

    def _start_locked(self) -> None:
        java = self._java()
        classpath = self._classpath()
        self._write_config()
        self._format_storage(java, classpath)
        cmd = [java, *self._jvm_args(), "-cp", classpath, _SERVER_CLASS, str(self.properties_file)]
        started = time.monotonic()
        with self._open_log() as log:
            log.write(
                f"\n===== llm-router: starting Kafka broker at {time.ctime()} =====\n".encode()
            )
            log.flush()
            log_offset = log.tell()
            # A new session: the broker outlives this process and ignores its terminal's ^C.
            self._process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._data_dir,
                start_new_session=True,
                preexec_fn=_die_with_parent if self._die_with_parent else None,
            )
        pid = self._process.pid
        self.pid_file.write_text(f"{pid}\n", encoding="ascii")
        logger.info(
            "started Kafka broker pid %d (%s, log %s); waiting for it to answer",
            pid,
            self.bootstrap_servers,
            self.log_file,
        )
        try:
            self._wait_ready(pid, log_offset)
        except BaseException:
            # Failed or interrupted (^C): leave no half-started broker behind.
            self._signal_and_wait(signal.SIGKILL, _STOP_TIMEOUT_S)
            raise
        logger.info(
            "Kafka broker pid %d serves %s after %.1fs",
            pid,
            self.bootstrap_servers,
            time.monotonic() - started,
        )

    def _wait_ready(self, pid: int, log_offset: int | None = None) -> None:
        s = self._settings
        cluster_id = self._cluster_id()
        deadline = time.monotonic() + s.start_timeout_s
        while True:
            if _probe(s.host, s.port, 1.0, cluster_id) and not self._exited(pid):
                return
            if self._exited(pid):
                lines = self._log_lines(log_offset)
                raise BrokerStartError(
                    f"Kafka broker (pid {pid}, {self.bootstrap_servers}) exited during start"
                    f"{_cause(lines)}; see {self.log_file}",
                    _tail(lines, _LOG_TAIL_LINES),
                )
            if time.monotonic() >= deadline:
                lines = self._log_lines(log_offset)
                raise BrokerStartTimeout(
                    f"Kafka broker (pid {pid}) did not answer on {self.bootstrap_servers} within "
                    f"{s.start_timeout_s:.0f}s{_cause(lines)}; see {self.log_file}",
                    _tail(lines, _LOG_TAIL_LINES),
                )
            time.sleep(0.2)

    def _cluster_id(self) -> str | None:
        """The cluster id the storage was formatted with (None before the first format)."""
        with contextlib.suppress(OSError):
            for line in (
                (self.log_dirs / "meta.properties").read_text(encoding="utf-8").splitlines()
            ):
                key, _, value = line.partition("=")
                if key.strip() == "cluster.id":
                    return value.strip()
        return None

    def _log_lines(self, offset: int | None) -> list[str]:
        """The broker log written since ``offset`` (the whole log when None)."""
        try:
            with open(self.log_file, "rb") as log:
                if offset is not None:
                    log.seek(offset)
                else:
                    log.seek(max(0, log.seek(0, os.SEEK_END) - 256 * 1024))
                return log.read().decode("utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []
