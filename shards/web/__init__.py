"""HTTP side of a worker: health, metrics, the management API (aiohttp lives here)."""
