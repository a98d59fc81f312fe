"""A private Redis Cluster for the tests: 3 masters + 3 replicas on loopback.

Each node is a RedisServer started with `--cluster-enabled yes` (its bus on a
second free port), joined with `redis-cli --cluster create`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from .redis_server import RedisServer
from .waiting import free_port


class RedisCluster:
    def __init__(self, workdir: Path, masters: int = 3, replicas_per_master: int = 1) -> None:
        self.workdir = workdir
        self.nodes: list[RedisServer] = []
        total = masters * (1 + replicas_per_master)
        for index in range(total):
            port = free_port()
            self.nodes.append(
                RedisServer(
                    workdir / f"node{index}",
                    port,
                    extra_args=(
                        "--cluster-enabled",
                        "yes",
                        "--cluster-port",
                        str(free_port()),
                        "--cluster-config-file",
                        f"nodes-{port}.conf",
                        # Fast failover keeps the tests short; the default is 15 s.
                        "--cluster-node-timeout",
                        "1000",
                        "--cluster-replica-validity-factor",
                        "0",
                        # Replicas sync at once (the default waits 5 s for more of them).
                        "--repl-diskless-sync-delay",
                        "0",
                    ),
                )
            )
        self.replicas_per_master = replicas_per_master
        self.master_count = masters

    @property
    def url(self) -> str:
        """Any live node; the clients discover the rest."""
        node = next(n for n in self.nodes if n.running)
        return f"redis://127.0.0.1:{node.port}/0"

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not on PATH")
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                str(self.replicas_per_master),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every slot served, every live node agreeing on it, and every live
        replica in sync with its master (a failover then loses nothing acknowledged)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if (
                    all(self._ok(n) and self._synced(n) for n in self.nodes if n.running)
                    and len(self.masters()) >= self.master_count
                ):
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis cluster not healthy in time")
            time.sleep(0.1)

    @staticmethod
    def _ok(node: RedisServer) -> bool:
        client = node.client()
        try:
            return b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO")
        finally:
            client.close()

    @staticmethod
    def _synced(node: RedisServer) -> bool:
        """A master, or a replica whose link to its master is up and not syncing."""
        client = node.client()
        try:
            info = client.info("replication")
        finally:
            client.close()
        return info["role"] == "master" or (
            info.get("master_link_status") == "up" and not info.get("master_sync_in_progress")
        )

    def client(self) -> redis.RedisCluster:
        node = next(n for n in self.nodes if n.running)
        return redis.RedisCluster(host="127.0.0.1", port=node.port, socket_timeout=5)

    def _topology(self) -> dict[int, list[tuple[int, int]]]:
        """port -> slot ranges, for every connected master that owns slots."""
        node = next(n for n in self.nodes if n.running)
        client = node.client()
        try:
            raw = client.execute_command("CLUSTER", "NODES")
        finally:
            client.close()
        text = raw.decode() if isinstance(raw, bytes) else raw
        owners: dict[int, list[tuple[int, int]]] = {}
        for line in text.splitlines():
            parts = line.split()
            flags = parts[2].split(",")
            if "master" not in flags or "fail" in flags or len(parts) < 9:
                continue
            port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
            ranges = []
            for rng in parts[8:]:
                if rng.startswith("["):
                    continue  # a slot being migrated or imported
                low, _, high = rng.partition("-")
                ranges.append((int(low), int(high or low)))
            owners[port] = ranges
        return owners

    def masters(self) -> list[RedisServer]:
        """The running masters that own slots right now."""
        ports = self._topology()
        return [n for n in self.nodes if n.running and n.port in ports]

    def owner_of(self, key: str) -> RedisServer:
        """The master serving `key`'s slot."""
        slot = _keyslot(key)
        for port, ranges in self._topology().items():
            if any(low <= slot <= high for low, high in ranges):
                return next(n for n in self.nodes if n.port == port)
        raise RuntimeError(f"no master owns the slot of {key}")

    def migrate_slot(self, key: str, target: RedisServer) -> None:
        """Move `key`'s slot, with its keys, to master `target` (as resharding does)."""
        slot = _keyslot(key)
        source = self.owner_of(key)
        src, dst = source.client(), target.client()
        try:
            src_id = src.execute_command("CLUSTER", "MYID").decode()
            dst_id = dst.execute_command("CLUSTER", "MYID").decode()
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
            while True:
                keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
                if not keys:
                    break
                src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
            for node in self.masters():
                client = node.client()
                try:
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
                finally:
                    client.close()
        finally:
            src.close()
            dst.close()

    def flushall(self) -> None:
        for node in self.masters():
            c = node.client()
            try:
                c.flushall()
            finally:
                c.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _keyslot(key: str) -> int:
    """The cluster slot of a key (CRC16 of its hash tag, mod 16384)."""
    from redis.crc import key_slot

    return key_slot(key.encode())
