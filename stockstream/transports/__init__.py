"""The two ways clients connect: Socket.IO and the plain `/live-price` WebSocket."""
