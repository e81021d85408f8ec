"""The gRPC server's h2 engine remembers at most ``CLOSED_STREAMS_REMEMBERED`` closed streams
per connection (h2's default 65,536 held megabytes on a long-lived connection; issue 13)."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events

from net.grpc.server import CLOSED_STREAMS_REMEMBERED, _Engine

CALLS = CLOSED_STREAMS_REMEMBERED + 200
REQUEST = [(":method", "POST"), (":scheme", "http"), (":path", "/p"), (":authority", "a")]


def closed_remembered(server: h2.connection.H2Connection) -> int:
    """Run ``CALLS`` request/response exchanges; the closed streams the server keeps."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    for call in range(CALLS):
        stream_id = 2 * call + 1
        client.send_headers(stream_id, REQUEST, end_stream=True)
        for event in server.receive_data(client.data_to_send()):
            if isinstance(event, h2.events.RequestReceived):
                server.send_headers(event.stream_id, [(":status", "200")], end_stream=True)
        client.receive_data(server.data_to_send())
    server.open_inbound_streams  # noqa: B018  # h2 moves closed streams aside when counting
    return len(server._closed_streams)  # the bounded state itself


def test_the_server_engine_forgets_old_closed_streams() -> None:
    config = h2.config.H2Configuration(client_side=False, header_encoding=None)
    assert closed_remembered(_Engine(config)) == CLOSED_STREAMS_REMEMBERED
    assert closed_remembered(h2.connection.H2Connection(config)) == CALLS  # h2's own default
