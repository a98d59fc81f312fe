"""The Redis backends: one Redis, or a Redis Cluster.

`RedisBroker` (broker.py) shares one Redis or a Redis Cluster between any
number of instances. It is assembled from parts whose variant the settings
choose: commands.py (the command store: publish script, snapshots, history,
replays; `ClusterCommandStore` on a cluster), listener.py (one pub/sub
connection) or shards.py (a reader per master, the topology watcher, resume),
markers.py (a read plus its marker in one MULTI/EXEC), sessions.py
(recoverable Socket.IO sessions), errors.py (every client failure as
BackendUnavailable), recorder.py (third-party updates into history, one
Redis) and discovery.py (a cluster's symbols for `*`).
"""
# The package imports nothing itself: create_broker imports the backend it builds.
