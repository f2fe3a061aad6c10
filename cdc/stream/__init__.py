"""The streaming path of one connector: routing, the edge loop, side records."""
