"""The WebSocket gateway: one socket per client carries every realtime feature."""
