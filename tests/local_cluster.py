"""A real multi-node Ray cluster on 127.0.0.1 for tests: a head plus worker node processes.

Everything it starts lives under its own temp dir, and `stop()` kills exactly the processes whose
command line names that dir, with their descendants: never another cluster on the machine.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil


def _free_port(skip: set[int] = frozenset()) -> int:
    # Ray reserves 10002-19999 for worker processes: stay above.
    for port in range(30000, 60000, 7):
        if port in skip:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


class LocalCluster:
    def __init__(self, temp_dir: Path, workers: int = 1, cpus: int = 1, auth: str = "disabled"):
        """auth="token": the head, the workers and `self.env` use a token of this cluster's own (the
        steps the README gives: RAY_AUTH_MODE=token and the token's file on every node and client)."""
        self.temp_dir = Path(temp_dir)
        self.workers, self.cpus = workers, cpus
        self.gcs_port, self.dashboard_port = _free_port(), 0
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        self.env = dict(env, RAY_AUTH_MODE=auth,
                        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        if auth == "token":
            self.token_file = self.temp_dir / "auth_token"
            self.temp_dir.mkdir(parents=True, exist_ok=True)
            self.token_file.write_text(secrets.token_hex(32))
            self.env["RAY_AUTH_TOKEN_PATH"] = str(self.token_file)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _ray(self, *args: str) -> None:
        ray_bin = str(Path(sys.executable).parent / "ray")
        proc = subprocess.run([ray_bin, "start", *args, "--disable-usage-stats"], env=self.env,
                              capture_output=True, text=True, timeout=120)
        if proc.returncode:
            raise RuntimeError(f"ray start failed: {proc.stderr[-2000:]}")

    def start(self) -> "LocalCluster":
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self.dashboard_port = _free_port({self.gcs_port})
        # Every node's agent gets a port of its own: by default they all take 52365, and on one
        # machine the node that loses the race has no job agent.
        taken = {self.gcs_port, self.dashboard_port}
        agent_ports = []
        for _ in range(self.workers + 1):
            agent_ports.append(_free_port(taken))
            taken.add(agent_ports[-1])
        self._ray("--head", "--node-ip-address=127.0.0.1", f"--port={self.gcs_port}",
                  "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                  f"--dashboard-agent-listen-port={agent_ports[0]}",
                  "--include-dashboard=true", f"--num-cpus={self.cpus}", f"--temp-dir={self.temp_dir}")
        # Every worker node gets a temp dir of its own, as on separate machines: nodes that share one
        # share runtime_resources/, and a node that unpacks a job's working_dir replaces the copy that
        # the driver on another node runs in (its cwd vanishes mid-run).
        for i, port in enumerate(agent_ports[1:], 1):
            self._ray(f"--address=127.0.0.1:{self.gcs_port}", f"--num-cpus={self.cpus}",
                      f"--dashboard-agent-listen-port={port}", f"--temp-dir={self.temp_dir / f'n{i}'}")
        return self

    def processes(self) -> list[psutil.Process]:
        markers = (str(self.temp_dir), f":{self.gcs_port}")  # the client server names only the GCS port
        me = psutil.Process()
        exclude = {me.pid} | {p.pid for p in me.parents()}
        roots = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if p.pid not in exclude and any(m in part for part in (p.info["cmdline"] or []) for m in markers):
                    roots.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        found = {p.pid: p for p in roots}
        for p in roots:
            try:
                found.update({c.pid: c for c in p.children(recursive=True) if c.pid not in exclude})
            except psutil.NoSuchProcess:
                continue
        return list(found.values())

    def stop(self) -> None:
        procs = self.processes()
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=10)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        time.sleep(0.5)

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
