"""etcd's v3 API on the client port: one implementation of each RPC (``service``), served by
gRPC (``net.grpc``) and by the JSON gateway (``gateway``); errors in ``errors``."""
