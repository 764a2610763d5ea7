"""The browser chat client's JSON protocol (docs/websocket.md), sans-IO."""
