"""Linux network namespaces for multi-host tests: one namespace per "host",
each joined to a bridge by a veth pair, so every node has its own address
the way a pod has, and a link can be cut and restored.

Everything a `NetnsLab` creates is named with `hpmh<pid>` (the pid of the
test process) and removed by `destroy()`; `remove_stale()` removes what a
killed earlier run left (names whose pid is no longer alive) and leaves
alone the names of a run still in progress. The bridge lives in the root
namespace with the first free 10.213.N.0/24, so the test process reaches
every node directly; traffic only flows between the namespaces the lab
created and that bridge.

Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2's `ip`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from hedgeplug.control import ControlClient
from hedgeplug.processes.node import node_command
from hedgeplug.testing.processes import NodeProcess, ProcessCluster, start_process
from hedgeplug.testing.supervise import pid_alive
from hedgeplug_postgres.testing import PostgresServer

PREFIX = "hpmh"
STALE_RE = re.compile(rf"^{PREFIX}(\d+)[-bv]")
SUBNET_BASE = "10.213"
IP_TIMEOUT = 20.0


class LabError(RuntimeError):
    """A namespace, link or address could not be set up; the message quotes `ip`."""


def ip(*args: str, check: bool = True) -> str:
    """Run `ip ARGS`; LabError (with ip's own message) when it fails and `check`."""
    try:
        done = subprocess.run(
            ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT
        )
    except FileNotFoundError:
        raise LabError("iproute2's `ip` command is not installed (apt-get install iproute2)") from None
    if check and done.returncode != 0:
        raise LabError(f"`ip {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _stale(name: str) -> bool:
    """Made by a run whose process is gone (or by an earlier holder of our own pid)."""
    match = STALE_RE.match(name)
    if match is None:
        return False
    pid = int(match[1])
    return pid == os.getpid() or not pid_alive(pid)


def remove_stale() -> list[str]:
    """Remove namespaces and links of earlier runs whose process is gone; returns their names.
    Call it before creating anything: names with this process's own pid count as stale."""
    removed = []
    for line in ip("netns", "list", check=False).splitlines():
        name = line.split()[0] if line.strip() else ""
        if not _stale(name):
            continue
        # Processes of that dead run still inside keep the namespace alive; they are ours.
        for pid in ip("netns", "pids", name, check=False).split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        ip("netns", "delete", name, check=False)
        removed.append(name)
    for line in ip("-o", "link", "show", check=False).splitlines():
        parts = line.split(":", 2)
        name = parts[1].strip().split("@")[0] if len(parts) > 2 else ""
        if _stale(name):
            ip("link", "delete", name, check=False)
            removed.append(name)
    return removed


def free_subnet() -> ipaddress.IPv4Network:
    """The first 10.213.N.0/24 that no address of the root namespace is in."""
    used = ip("-o", "-4", "addr", "show", check=False)
    for third in range(256):
        net = ipaddress.IPv4Network(f"{SUBNET_BASE}.{third}.0/24")
        if not any(
            ipaddress.IPv4Interface(m).ip in net for m in re.findall(r"inet (\S+)", used)
        ):
            return net
    raise LabError(f"every {SUBNET_BASE}.N.0/24 is in use in the root namespace")


class NetnsLab:
    """A bridge in the root namespace and namespaces hanging off it."""

    def __init__(self) -> None:
        self.tag = f"{PREFIX}{os.getpid()}"
        self.bridge = f"{self.tag}b"
        self.subnet = free_subnet()
        self.gateway = str(self.subnet.network_address + 1)
        self.namespaces: dict[str, str] = {}  # namespace -> its address
        self.veths: dict[str, str] = {}  # namespace -> host-side veth
        self._links: list[str] = []

    def create(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        self._links.append(self.bridge)
        ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def add_host(self, label: str, host_number: int) -> tuple[str, str]:
        """A namespace `<tag>-<label>` with address .host_number on the bridge: (name, address)."""
        name = f"{self.tag}-{label}"
        veth = f"{self.tag}v{host_number}"
        address = str(self.subnet.network_address + host_number)
        ip("netns", "add", name)
        self.namespaces[name] = address
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
        self._links.append(veth)
        self.veths[name] = veth
        ip("link", "set", veth, "master", self.bridge, "up")
        ip("-n", name, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
        ip("-n", name, "link", "set", "eth0", "up")
        ip("-n", name, "link", "set", "lo", "up")
        return name, address

    def cut(self, name: str) -> None:
        """Take the namespace's link down: its packets go nowhere, nobody's reach it."""
        ip("link", "set", self.veths[name], "down")

    def restore(self, name: str) -> None:
        ip("link", "set", self.veths[name], "up")

    def destroy(self) -> list[str]:
        """Remove every namespace and link this lab made (safe to call twice); errors listed."""
        errors = []
        for name in list(self.namespaces):
            for pid in ip("netns", "pids", name, check=False).split():
                try:  # a child that outlived its own cleanup
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            try:
                ip("netns", "delete", name)
            except LabError as exc:
                errors.append(str(exc))
            del self.namespaces[name]
        for link in reversed(self._links):
            try:
                ip("link", "delete", link)
            except LabError as exc:
                if "Cannot find device" not in str(exc):  # veths go with their namespace
                    errors.append(str(exc))
        self._links.clear()
        return errors

    def leftovers(self) -> list[str]:
        """Namespaces and links with this lab's tag still present (none after destroy)."""
        names = [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]
        for line in ip("-o", "link", "show").splitlines():
            parts = line.split(":", 2)
            if len(parts) > 2:
                names.append(parts[1].strip().split("@")[0])
        own = str(os.getpid())
        return [n for n in names if (m := STALE_RE.match(n)) is not None and m[1] == own]


class NamespacedPostgres(PostgresServer):
    """The test kit's throwaway PostgreSQL, listening on a namespace's address
    inside that namespace. `ip netns exec` needs root, so the process starts
    as root and `setpriv` drops to the unprivileged user (PostgreSQL refuses
    root) and sets the parent-death signal again after that change."""

    def __init__(
        self, netns: str, address: str, clients: ipaddress.IPv4Network, port: int = 5432
    ) -> None:
        super().__init__(port=port)
        self.netns = netns
        self.host = address
        # initdb trusts loopback only; the nodes connect from the lab's subnet.
        with open(self.data_dir / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {clients} scram-sha-256\n")

    def run_as(self) -> str | None:
        return None  # setpriv in command() drops privileges after entering the namespace

    def command(self) -> list[str]:
        command = [
            f"listen_addresses={self.host}" if part.startswith("listen_addresses=") else part
            for part in super().command()
        ]
        drop: list[str] = []
        if self.user is not None:
            drop = [
                "setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--clear-groups",
                f"--pdeathsig={signal.Signals(self.stop_signal).name.removeprefix('SIG')}", "--",
            ]
        return ["ip", "netns", "exec", self.netns, *drop, *command]

    def ready(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                pass
        except OSError:
            return False
        check = subprocess.run(
            [str(self.bin / "pg_isready"), "-h", self.host, "-p", str(self.port), "-t", "2"],
            capture_output=True, timeout=10,
        )
        return check.returncode == 0


async def start_in_namespace(
    netns: str, args: Sequence[str], log_path: Path, *, ready_timeout: float
) -> NodeProcess:
    """`ip netns exec NETNS hedgeplug run ARGS`, waiting for its "listening on" line.
    `ip netns exec` execs in place, so the child's parent stays this process and
    HEDGEPLUG_DIE_WITH_PARENT stops the node if the test dies."""
    return await start_process(
        ["ip", "netns", "exec", netns, *node_command(args)], log_path,
        ready_timeout=ready_timeout, env={**os.environ, "HEDGEPLUG_DIE_WITH_PARENT": "1"},
        what=f"node in {netns}",
    )


class NetnsCluster(ProcessCluster):
    """ProcessCluster whose nodes each run in their own namespace of `lab`,
    from a config file written here (the lock, key and timings in `settings`),
    observed from the root namespace over the bridge with the cluster key."""

    def __init__(
        self, workdir: Path, lab: NetnsLab, *, cluster: str, key: str, settings: str,
        first_host: int = 10, port: int = 7946,
    ) -> None:
        super().__init__(workdir, cluster=cluster, overrides=["lock.use=postgres"])
        self.client = ControlClient(cluster=cluster, key=key, registry=self.registry)
        self.lab = lab
        self.key = key
        self.settings = settings
        self.first_host = first_host
        self.port = port
        self.netns_of: dict[str, str] = {}  # node id -> namespace
        self.join_seconds: dict[str, float] = {}  # node id -> namespace made to listening

    def config_text(self, node_id: str, address: str) -> str:
        return (
            f'[node]\nid = "{node_id}"\ncluster = "{self.cluster}"\nkey = "{self.key}"\n\n'
            f'[transport]\nuse = "tcp"\nbind = "{address}:{self.port}"\n\n{self.settings}'
        )

    async def add(self, ready_timeout: float = 60.0) -> NodeProcess:
        self._count += 1
        node_id = f"n{self._count:02d}"
        began = anyio.current_time()
        netns, address = await anyio.to_thread.run_sync(
            self.lab.add_host, node_id, self.first_host + self._count
        )
        config = self.workdir / f"{node_id}.toml"
        config.write_text(self.config_text(node_id, address))
        node = await start_in_namespace(
            netns, ["--config", str(config)], self.workdir / f"{node_id}.log",
            ready_timeout=ready_timeout,
        )
        self.netns_of[node.id] = netns
        self.join_seconds[node.id] = anyio.current_time() - began
        self.nodes.append(node)
        return node

    async def status_inside(self, node: NodeProcess, timeout: float = 30.0) -> dict[str, Any] | None:
        """`hedgeplug status --json` run inside the node's own namespace (reaches it while cut)."""
        command = [
            "ip", "netns", "exec", self.netns_of[node.id], sys.executable, "-m", "hedgeplug",
            "status", "--address", node.address, "--cluster", self.cluster, "--key", self.key,
            "--json", "--timeout", "3s",
        ]
        with anyio.fail_after(timeout):
            done = await anyio.run_process(command, check=False)
        if done.returncode != 0:
            return None
        return json.loads(done.stdout)
