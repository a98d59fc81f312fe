"""The application factory: `create_app(settings)` builds one instance."""

from __future__ import annotations

from aiohttp import web

from .broker import Broker, broker_kinds
from .config import Settings
from .demo import DemoPage
from .http.common import errors_as_json
from .http.cors import allow_api_cors
from .http.docs import DOCUMENT_PATHS, ApiDocs, Vocabulary
from .http.publish import PublishRoute
from .http.routes import Routes
from .metrics import MetricsRoute, build_registry
from .node import Node
from .session import Session
from .transports import socketio_transport, websocket

NODE = web.AppKey("node", Node)


def api_vocabulary() -> Vocabulary:
    """What the API documents enumerate, taken from the code that answers."""
    return Vocabulary(
        actions=tuple(Session.actions),
        socketio_events=socketio_transport.EVENTS,
        reply_types=websocket.REPLY_TYPES,
        backends=broker_kinds(),
    )


def create_app(settings: Settings) -> web.Application:
    node = Node(settings)
    app = web.Application(middlewares=[errors_as_json], client_max_size=settings.max_message_bytes)
    app[NODE] = node
    node.socketio.attach(app)
    node.websocket.attach(app)
    Routes(node).attach(app)
    PublishRoute(node).attach(app)
    MetricsRoute(build_registry(node)).attach(app)
    DemoPage().attach(app)
    ApiDocs(api_vocabulary()).attach(app)
    allow_api_cors(app, settings.cors_origins, DOCUMENT_PATHS)

    async def start(app: web.Application) -> None:
        await node.start()

    async def drain(app: web.Application) -> None:
        await node.drain()

    async def stop(app: web.Application) -> None:
        await node.stop()

    app.on_startup.append(start)
    app.on_shutdown.append(drain)
    app.on_cleanup.append(stop)
    return app


def node_of(app: web.Application) -> Node:
    return app[NODE]


def broker_of(app: web.Application) -> Broker:
    return app[NODE].broker
