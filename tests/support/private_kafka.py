"""A private single-node KRaft broker for tests that must take Kafka down (never the shared stack's broker).

It runs the same jars and the same properties as `deploy/local/stack.py`, on free ports and in its own
temporary data folder; `stop()` kills it, `start()` brings it back on the same ports with the same data.

    with PrivateKafka() as kafka:
        settings = CommonSettings(kafka_bootstrap_servers=kafka.bootstrap_servers)
        ...
        kafka.stop(); ...; kafka.start()
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from platform_common.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "deploy" / "local"


def _load_stack():
    # deploy/local is a folder of scripts, not a package: the broker is started the way `make up` starts its own
    spec = importlib.util.spec_from_file_location("local_stack", STACK / "stack.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


stack = _load_stack()


class PrivateKafka:
    def __init__(self, start_timeout: float = 60.0):
        self.port, self.controller_port = free_port(), free_port()
        self.home = Path(tempfile.mkdtemp(prefix="private-kafka-"))
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None
        self._base = [stack.java(), "-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                      f"-Dlog4j2.configurationFile={STACK / 'log4j2.properties'}", "-cp", stack.kafka_classpath()]
        self.conf = self.home / "server.properties"
        self.conf.write_text(
            (STACK / "kafka.properties").read_text()
            .replace("@LOG_DIRS@", str(self.home / "logs"))
            .replace("localhost:9093", f"localhost:{self.controller_port}")
            .replace("127.0.0.1:9093", f"127.0.0.1:{self.controller_port}")
            .replace("9092", str(self.port))
            # one partition per topic and a small footprint: this broker only serves one test
            .replace("num.partitions=3", "num.partitions=1")
            .replace("offsets.topic.num.partitions=10", "offsets.topic.num.partitions=1"))
        subprocess.run(stack.kafka_format_command(self._base, self.conf), check=True, capture_output=True)

    @property
    def bootstrap_servers(self) -> str:
        return f"localhost:{self.port}"

    def start(self) -> "PrivateKafka":
        if self.running:
            return self
        self._log = (self.home / "kafka.log").open("ab")
        self.process = subprocess.Popen([*self._base, "kafka.Kafka", str(self.conf)], stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while not stack.port_open(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.home / "kafka.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"private Kafka did not start on port {self.port}:\n{tail}")
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        """Kills the broker at once (SIGKILL), as a crash would; the data folder stays for `start()`."""
        if self.process is not None:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
            self.process = None
            self._log.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> "PrivateKafka":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
