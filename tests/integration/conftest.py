"""Services started for integration tests: a real `mlflow server` on loopback.

The server (sqlite backend store, local artifact root served through the server) is started once
per session on a free port and stopped at the end, by its own process group.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def stop_group(proc: subprocess.Popen, grace: float) -> None:
    """Stop the process group ``proc`` leads (ours: started with start_new_session): SIGTERM, then
    SIGKILL after ``grace`` seconds."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _wait_until(ready: Callable[[], bool], proc: subprocess.Popen, log_path: Path, what: str, waiting_for: str,
                timeout: float) -> None:
    """Poll ``ready`` until it holds; fail with the end of the service's log if it dies or stalls."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not {waiting_for} within {timeout:.0f} s: {log_path.read_text()[-2000:]}")
        time.sleep(0.5)


def wait_for_http(url: str, proc: subprocess.Popen, log_path: Path, what: str, timeout: float) -> None:
    """Poll `url` until it answers 200; fail with the end of the service's log if it dies or stalls."""
    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    _wait_until(answers, proc, log_path, what, f"answer on {url}", timeout)


def wait_for_line(log_path: Path, text: str, proc: subprocess.Popen, what: str, timeout: float) -> None:
    """Wait until ``text`` appears in the service's log; fail with its end if it dies or stalls."""
    _wait_until(lambda: text in log_path.read_text(errors="replace"), proc, log_path, what, f"log {text!r}", timeout)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback TCP port that is free now and not handed out before in this session.

    Picked below the kernel's ephemeral range: a port from that range (what binding port 0 gives)
    can be taken by any outgoing connection or port-0 bind between this call and the service's own
    bind, and a Ray head opens hundreds of them while it starts its dashboard last."""
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # a crowded range: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_head_command(ray_bin: Path, temp_dir: str, num_cpus: int) -> tuple[list[str], str]:
    """`ray start --head --block` with every port explicit and the dashboard on loopback; returns the
    command and the dashboard's http address. A default port (agent 52365, metrics, ...) held by any
    other Ray on this machine would keep the job agent from starting."""
    # Workers take ports from their own block, kept out of free_port's hands.
    workers = min(free_port(), _ephemeral_low() - 200)
    _handed_out.update(range(workers, workers + 200))
    dash = free_port()
    cmd = [str(ray_bin), "start", "--head", "--block", f"--port={free_port()}", f"--dashboard-port={dash}",
           "--dashboard-host=127.0.0.1", f"--num-cpus={num_cpus}", "--include-dashboard=true",
           f"--temp-dir={temp_dir}", "--disable-usage-stats",
           f"--min-worker-port={workers}", f"--max-worker-port={workers + 199}",
           *(f"--{name}={free_port()}" for name in (
               "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
               "metrics-export-port", "node-manager-port", "object-manager-port", "ray-client-server-port"))]
    return cmd, f"http://127.0.0.1:{dash}"


def ray_logs_tail(temp_dir: str, chars: int = 1500) -> str:
    """The ends of a Ray head's dashboard, GCS and raylet error logs, for a failure message (the temp
    dir is removed after a failed start, and with it the only record of why)."""
    parts = []
    logs = Path(temp_dir) / "session_latest" / "logs"
    for name in ("dashboard.log", "dashboard.err", "dashboard_agent.log", "gcs_server.err", "raylet.err"):
        try:
            text = (logs / name).read_text(errors="replace").strip()
        except OSError:
            continue
        if text:
            parts.append(f"--- {name}: ...{text[-chars:]}")
    return "\n".join(parts) or f"(no Ray logs under {logs})"


@contextlib.contextmanager
def running_mlflow_server(backend_store_uri: str, root: Path) -> Iterator[str]:
    """`mlflow server` over ``backend_store_uri`` on a free loopback port, in ``root`` (its log and
    artifacts folder); yields http://127.0.0.1:PORT and stops the server's own process group."""
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_bin), "server", "--backend-store-uri", backend_store_uri,
           "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root,
                            # No job runner: MLflow's server jobs (GenAI evaluation, trace roll-ups) are
                            # unused here and its seven consumer processes would take the CPU the tests need.
                            env={**os.environ, "MLFLOW_TRACKING_URI": "", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{uri}/health", proc, root / "server.log", "mlflow server", timeout=90)
        yield uri
    finally:
        stop_group(proc, grace=5)  # the server forks workers: the whole group it leads
        log.close()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    """The tracking URI of a fresh `mlflow server` (http://127.0.0.1:PORT)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    root = tmp_path_factory.mktemp("mlflow-server")
    # Create the schema here (mlflow is imported by the tests anyway): the server then finds an
    # up-to-date database instead of running every migration during its start-up.
    SqlAlchemyStore(f"sqlite:///{root / 'mlflow.db'}", "mlflow-artifacts:/")
    with running_mlflow_server(f"sqlite:///{root / 'mlflow.db'}", root) as uri:
        yield uri
