"""gRPC over HTTP/2 on Trio: a server for the client port and a small client.

Built on the sans-I/O ``h2`` library (framing, HPACK, flow control, settings) and
``protobuf``; the I/O around them is ours and runs over any :class:`net.network.Network`
stream, so the simulator runs it too.
"""

from net.grpc.client import CallStream, GrpcChannel
from net.grpc.limits import GrpcLimits
from net.grpc.server import GrpcServer

__all__ = ["CallStream", "GrpcChannel", "GrpcLimits", "GrpcServer"]
