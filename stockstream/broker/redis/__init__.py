"""The Redis backends: one Redis, or a Redis Cluster.

`RedisBroker` (broker.py) shares one Redis between any number of
instances; `ClusterBroker` (cluster.py) is the same broker over a cluster's
hash-tagged keys and sharded pub/sub, with a reader per master. Around them:
errors.py turns every client failure into BackendUnavailable, sessions.py
keeps recoverable Socket.IO sessions, recorder.py records third-party
updates into history, discovery.py finds a cluster's symbols for `*`.
"""
# The package imports nothing itself: create_broker imports the backend it builds.
