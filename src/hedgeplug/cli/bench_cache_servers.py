"""The baselines of `hedgeplug bench cache`: redis-server and memcached
(Debian's packages, from /usr/bin or the PATH), started on free loopback
ports for the run and stopped after it, and the node processes' handles."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process

from ..errors import HedgeplugError

# binary, client module (PyPI name), what to install when missing
BASELINES = {
    "redis": ("redis-server", "redis", "redis-py"),
    "memcached": ("memcached", "pymemcache", "pymemcache"),
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_binary(name: str) -> str | None:
    return shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None)


def missing_reason(kind: str) -> str | None:
    """Why baseline `kind` cannot run here, or None when it can."""
    binary, module, package = BASELINES[kind]
    if find_binary(binary) is None:
        return f"{binary} not found in PATH or /usr/bin (Debian: apt-get install {binary.split('-')[0]})"
    if importlib.util.find_spec(module) is None:
        return f"the Python client {package} is not installed (pip install 'hedgeplug[test]')"
    return None


class BaselineServer:
    """One redis-server or memcached on a free loopback port, without persistence."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.port = free_port()
        binary = find_binary(BASELINES[kind][0])
        assert binary is not None
        if kind == "redis":
            argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--dir", str(workdir)]
        else:
            # -I 2m: items up to 2 MiB (a 1 MiB value and its key exceed the default 1 MiB).
            argv = [binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "1024", "-I", "2m"]
            if os.geteuid() == 0:
                argv += ["-u", "nobody"]  # memcached refuses to run as root otherwise
        self.log = workdir / f"{kind}.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.version = ""

    def wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        tail = self.log.read_text(errors="replace")[-500:]
        self.stop()
        raise HedgeplugError(f"{self.kind} did not listen on 127.0.0.1:{self.port} within {timeout:g}s: {tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def server_version(kind: str, port: int) -> str:
    if kind == "redis":
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)
        try:
            return f"redis-server {client.info('server')['redis_version']}"
        finally:
            client.close()
    import pymemcache

    mc = pymemcache.Client(("127.0.0.1", port))
    try:
        return f"memcached {mc.version().decode()}"
    finally:
        mc.close()


class NodeWorker:
    """One bench node process (hedgeplug.cli.bench_cache_node): a JSON
    command per line on its stdin, a JSON answer per line on its stdout."""

    def __init__(self, process: Process, node_id: str, address: str, log: Path) -> None:
        self.process = process
        self.id = node_id
        self.address = address
        self.log = log
        self._buffer = b""
        self.echo_port = 0

    @classmethod
    async def start(cls, config: Path, ports: dict[str, int], log: Path, timeout: float) -> NodeWorker:
        argv = [sys.executable, "-m", "hedgeplug.cli.bench_cache_node", str(config),
                str(ports.get("redis", 0)), str(ports.get("memcached", 0))]
        with open(log, "ab") as err:
            process = await anyio.open_process(argv, stderr=err, start_new_session=True)
        worker = cls(process, "", "", log)
        try:
            ready = await worker._read(timeout)
        except BaseException:
            worker.kill()
            raise
        worker.id, worker.address = ready["id"], ready["address"]
        worker.echo_port = int(ready["echo_port"])
        return worker

    async def _read(self, timeout: float) -> Any:
        assert self.process.stdout is not None
        with anyio.move_on_after(timeout):
            while b"\n" not in self._buffer:
                try:
                    self._buffer += await self.process.stdout.receive()
                except anyio.EndOfStream:
                    break
            if b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                return json.loads(line)
            raise HedgeplugError(f"bench node exited; its log {self.log}:\n{self._tail()}")
        raise HedgeplugError(f"bench node gave no answer within {timeout:g}s; its log {self.log}:\n{self._tail()}")

    def _tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"

    async def ask(self, limit: float, op: str, **args: Any) -> Any:
        """The node's answer to command `op`, within `limit` seconds."""
        assert self.process.stdin is not None
        await self.process.stdin.send((json.dumps({"op": op, **args}) + "\n").encode())
        answer = await self._read(limit)
        if isinstance(answer, dict) and "error" in answer:
            raise HedgeplugError(f"bench node {self.id}, {op}: {answer['error']}")
        return answer

    def kill(self) -> None:
        if self.process.returncode is None:
            try:
                self.process.kill()
            except ProcessLookupError:
                pass

    async def stop(self, timeout: float = 5.0) -> None:
        if self.process.stdin is not None:
            with anyio.move_on_after(1):
                try:
                    await self.process.stdin.aclose()  # end of input: the node stops
                except (anyio.BrokenResourceError, OSError):
                    pass
        with anyio.move_on_after(timeout):
            await self.process.wait()
            return
        self.kill()
        await self.process.wait()
