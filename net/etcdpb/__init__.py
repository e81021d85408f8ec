"""etcd 3.4's v3 protobuf messages and services, generated from the .proto files beside this.

``regenerate.py`` rebuilds the ``*_pb2`` modules; ``routes.py`` lists the JSON gateway's paths.
"""
