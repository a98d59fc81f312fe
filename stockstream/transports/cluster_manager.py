"""The Socket.IO client manager for a Redis Cluster.

python-socketio's AsyncRedisManager talks to one Redis (checked against
python-socketio 5.18): on a cluster its PUBLISH would go to whichever node the
URL names and its SUBSCRIBE would only hear that node. This manager uses the
sharded form instead: `SPUBLISH` on the manager's channel through the cluster
client (routed to the master owning the channel's slot) and `SSUBSCRIBE` on
that master. When the connection fails (a failover, a slot migration), it
re-reads the slot map, so it follows the channel to the current owner.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

from socketio.async_pubsub_manager import AsyncPubSubManager

from ..backoff import Backoff
from ..broker.clients import manager_cluster_client, manager_shard_client

log = logging.getLogger("stockstream.socketio.cluster")


class AsyncRedisClusterManager(AsyncPubSubManager):
    name = "redis-cluster"

    def __init__(self, url: str, channel: str = "socketio", write_only: bool = False, logger: Any = None) -> None:
        super().__init__(channel=channel, write_only=write_only, logger=logger)
        self.redis_url = url
        self.redis = manager_cluster_client(url)

    async def _publish(self, data: Any) -> Any:
        for attempt in range(2):
            try:
                node = self.redis.get_node_from_key(self.channel)
                return await self.redis.execute_command(
                    "SPUBLISH", self.channel, self.json.dumps(data), target_nodes=node
                )
            except Exception as exc:  # noqa: BLE001 - one retry on a fresh slot map, then give up
                log.warning("cannot publish a Socket.IO emit to the cluster: %s", exc)
                if attempt == 0:
                    await self._refresh()
        return None

    async def _refresh(self) -> None:
        try:
            await self.redis.nodes_manager.initialize()
        except Exception as exc:  # noqa: BLE001 - retried on the next failure
            log.debug("cannot refresh the cluster's slot map: %s", exc)

    async def _listen(self) -> AsyncIterator[Any]:
        backoff = Backoff(initial=0.1, cap=5.0)
        channel = self.channel.encode()
        while True:
            pubsub = None
            try:
                await self.redis.initialize()
                node = self.redis.get_node_from_key(self.channel)
                if node is None:
                    raise ConnectionError(f"no cluster node serves the slot of {self.channel}")
                client = manager_shard_client(self.redis_url, node.host, int(node.port))
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                await pubsub.ssubscribe(self.channel)
                backoff.reset()
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is None:
                        await pubsub.ping()
                        continue
                    if message["type"] == "sunsubscribe":
                        raise ConnectionError("the manager's channel moved to another shard")
                    if message["type"] == "smessage" and message["channel"] == channel:
                        yield message["data"]
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the manager must outlive any failure
                log.warning("Socket.IO cluster manager lost its connection: %s", exc)
                await self._refresh()
                await asyncio.sleep(backoff.next())
            finally:
                if pubsub is not None:
                    try:
                        await pubsub.aclose()
                    except Exception:  # noqa: BLE001 - closing a broken connection may fail
                        pass
