"""stockstream: real-time stock price streaming over Socket.IO and WebSocket."""

__version__ = "1.0.0"
