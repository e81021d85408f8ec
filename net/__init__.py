"""Everything that crosses a wire: the Network interface, TCP, peer frames, the HTTP API."""
