"""Live dialogue over the network: a Realtime-compatible WebSocket server, an HTTP endpoint, a web page."""
