"""Download a pinned Apache Kafka with Maven and build `java` command lines for it.

Kafka is not a Python package, but Maven Central has every jar of it, so the broker and
its command-line tools are fetched with `mvn dependency:copy-dependencies` into a cache
dir and run straight from a classpath (no tarball, no install step).
The cache is reused: a marker file is written only after a complete download, so an
interrupted download is redone on the next call.
"""

from __future__ import annotations

import base64
import ctypes
import fcntl
import functools
import hashlib
import importlib.resources
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"
SLF4J_VERSION = "2.0.16"
MIN_JAVA_MAJOR = 17
INSTALL_HINT = "apt-get install maven openjdk-17-jre-headless"
CACHE_ENV = "KAFKA_GATEWAY_CACHE"

BROKER_MAIN = "kafka.Kafka"
STORAGE_TOOL_MAIN = "kafka.tools.StorageTool"

# Small heaps and a cheap JIT: the tests run three brokers plus tools on two cores.
TOOL_JVM_OPTS: tuple[str, ...] = (
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
    "-Djava.awt.headless=true",
)

_PR_SET_PDEATHSIG = 1
_MARKER = "download-complete.json"
_DOWNLOADED = re.compile(r"Downloaded from \S+: (\S+) \(([^)]*?) at ")
_RESOURCES = ("log4j2-broker.xml", "log4j2-tools.xml")

Progress = Callable[[str], None]


class KafkaDistError(RuntimeError):
    """Kafka could not be downloaded or Java is unusable; the message says what to do."""


def stderr_progress(message: str) -> None:
    """Default progress sink: the CLI and pytest both show stderr lines to the user."""
    print(message, file=sys.stderr, flush=True)


def repo_root() -> Path:
    """The checkout root: the parent of the `localkafka` package directory."""
    return Path(__file__).resolve().parent.parent


def default_cache_dir(version: str = KAFKA_VERSION) -> Path:
    """`$KAFKA_GATEWAY_CACHE/kafka/<version>`, else `<repo>/.cache/kafka/<version>`."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else repo_root() / ".cache"
    return base / "kafka" / version


@dataclass(frozen=True)
class KafkaDistribution:
    """A complete download: the jars plus our log4j2 configs, and the `java` to run them."""

    home: Path
    java: str
    version: str = KAFKA_VERSION

    @property
    def libs_dir(self) -> Path:
        return self.home / "libs"

    @property
    def classpath(self) -> str:
        """Java expands `dir/*` itself, which keeps command lines short."""
        return str(self.libs_dir / "*")

    @property
    def broker_log4j(self) -> Path:
        return self.home / "config" / "log4j2-broker.xml"

    @property
    def tools_log4j(self) -> Path:
        return self.home / "config" / "log4j2-tools.xml"

    def java_command(
        self,
        main_class: str,
        args: Sequence[str] = (),
        jvm_opts: Sequence[str] = TOOL_JVM_OPTS,
        log4j_config: Path | None = None,
    ) -> list[str]:
        """The argv that runs `main_class` from the cached jars (tool logging by default)."""
        log4j = log4j_config or self.tools_log4j
        return [
            self.java,
            *jvm_opts,
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            self.classpath,
            main_class,
            *args,
        ]


def find_java() -> str:
    """`$JAVA_HOME/bin/java` if set, else `java` on PATH; checks it is Java 17 or newer."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not candidate or not Path(candidate).exists():
        raise KafkaDistError(
            f"`java` was not found (Kafka needs Java 17+); install: {INSTALL_HINT}"
        )
    _check_java_version(candidate)
    return candidate


@functools.cache
def _check_java_version(java: str) -> None:
    """Kafka 4 refuses to run on Java < 17; say so up front instead of a stack trace."""
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise KafkaDistError(f"cannot tell the version of {java}: {out.stderr.strip()}")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0" style
        major = int(match.group(2))
    if major < MIN_JAVA_MAJOR:
        raise KafkaDistError(
            f"{java} is Java {major}; Kafka {KAFKA_VERSION} needs Java {MIN_JAVA_MAJOR}+. "
            f"Install: {INSTALL_HINT}"
        )


def ensure_distribution(
    cache_dir: Path | None = None,
    progress: Progress | None = stderr_progress,
) -> KafkaDistribution:
    """Return the cached Kafka, downloading it with Maven first if needed.

    Safe to call from several processes at once (a file lock serialises downloads).
    """
    home = cache_dir or default_cache_dir()
    java = find_java()
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / ".lock"):
        if not _is_complete(home):
            _download(home, progress or (lambda _msg: None))
        _install_resources(home)
    return KafkaDistribution(home=home, java=java)


def _spec() -> dict[str, str]:
    """What a download contains; a marker with different content forces a new download."""
    return {"kafka": KAFKA_VERSION, "log4j": LOG4J_VERSION, "slf4j": SLF4J_VERSION}


def _is_complete(home: Path) -> bool:
    marker = home / _MARKER
    try:
        return bool(json.loads(marker.read_text()) == _spec() and any(home.glob("libs/*.jar")))
    except (OSError, ValueError):
        return False


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _render_pom() -> str:
    template = _resource_text("kafka-pom.xml")
    for key, value in (
        ("KAFKA_VERSION", KAFKA_VERSION),
        ("LOG4J_VERSION", LOG4J_VERSION),
        ("SLF4J_VERSION", SLF4J_VERSION),
    ):
        template = template.replace(f"@{key}@", value)
    return template


def _resource_text(name: str) -> str:
    return importlib.resources.files("localkafka").joinpath("resources", name).read_text()


def _install_resources(home: Path) -> None:
    """Copy log4j configs next to the jars: Java needs real files, and edits should apply."""
    config = home / "config"
    config.mkdir(exist_ok=True)
    for name in _RESOURCES:
        text = _resource_text(name)
        target = config / name
        if not target.exists() or target.read_text() != text:
            target.write_text(text)


def _download(home: Path, progress: Progress) -> None:
    """Run Maven into `libs.partial/`, then swap it in and write the marker."""
    mvn = shutil.which("mvn")
    if not mvn:
        raise KafkaDistError(
            f"`mvn` was not found; it is needed once to download Kafka {KAFKA_VERSION}. "
            f"Install: {INSTALL_HINT}"
        )
    (home / _MARKER).unlink(missing_ok=True)
    partial = home / "libs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    pom = home / "pom.xml"
    pom.write_text(_render_pom())
    progress(f"Downloading Apache Kafka {KAFKA_VERSION} with Maven into {home} ...")
    _run_maven(mvn, pom, partial, progress)
    shutil.rmtree(home / "libs", ignore_errors=True)
    partial.rename(home / "libs")
    (home / _MARKER).write_text(json.dumps(_spec()))
    jars = len(list((home / "libs").glob("*.jar")))
    progress(f"Kafka {KAFKA_VERSION} is ready: {jars} jars in {home / 'libs'}")


def _run_maven(mvn: str, pom: Path, output: Path, progress: Progress) -> None:
    """Stream Maven's download lines as progress; on failure raise with its last lines."""
    cmd = [
        mvn,
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={output}",
        "-DincludeScope=runtime",
    ]
    lines: list[str] = []
    downloads = 0
    with subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=pom.parent,
        preexec_fn=die_with_parent_preexec(),
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            match = _DOWNLOADED.search(line)
            if match:
                downloads += 1
                name, size = match.group(1).rsplit("/", 1)[-1], match.group(2)
                if downloads % 100 == 0 or "/org/apache/kafka/kafka_" in line:
                    progress(f"  {downloads} files downloaded, latest {name} ({size})")
    if downloads:
        progress(f"  {downloads} files downloaded from Maven Central")
    if proc.returncode != 0:
        tail = "\n".join(lines[-40:])
        raise KafkaDistError(f"Maven failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")


def random_kafka_uuid() -> str:
    """What `kafka-storage random-uuid` prints: url-safe base64 of 16 random bytes."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):  # would be read as a command-line flag
            return text


def bootstrap_checkpoint(dist: KafkaDistribution, features: Sequence[str] = ()) -> Path:
    """A KRaft `bootstrap.checkpoint` written by Kafka's own StorageTool, cached per features.

    Formatting runs one JVM per node (~1.5 s for three nodes on two cores). The file only
    holds the initial feature levels (nothing node- or cluster-specific), so it is made
    once per distribution and feature set and copied into every node's metadata dir.
    """
    key = hashlib.sha256(",".join(sorted(features)).encode()).hexdigest()[:16]
    target = dist.home / "format-templates" / key / "bootstrap.checkpoint"
    if target.exists():
        return target
    with _locked(dist.home / ".lock"):
        if not target.exists():
            _format_template(dist, features, target)
    return target


def _format_template(dist: KafkaDistribution, features: Sequence[str], target: Path) -> None:
    with tempfile.TemporaryDirectory(dir=dist.home) as tmp:
        work = Path(tmp)
        config = work / "server.properties"
        config.write_text(
            "process.roles=broker,controller\nnode.id=1\n"
            "controller.quorum.voters=1@127.0.0.1:9\ncontroller.listener.names=CONTROLLER\n"
            "listeners=PLAINTEXT://127.0.0.1:8,CONTROLLER://127.0.0.1:9\n"
            f"log.dirs={work / 'data'}\n"
        )
        args = ["format", "--cluster-id", random_kafka_uuid(), "--config", str(config)]
        for feature in features:
            args += ["--feature", feature]
        out = subprocess.run(
            dist.java_command(STORAGE_TOOL_MAIN, args),
            capture_output=True,
            text=True,
            check=False,
            preexec_fn=die_with_parent_preexec(),
        )
        if out.returncode != 0:
            raise KafkaDistError(f"kafka-storage format failed:\n{out.stdout}{out.stderr}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(work / "data" / "bootstrap.checkpoint"), target)


def die_with_parent_preexec() -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to SIGKILL the child when we die, even by SIGKILL.

    Linux ties this to the *thread* that forks, so it is only used from the main thread
    (a worker thread exiting would otherwise take the child with it).
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not (
        threading.main_thread()
    ):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return hook
