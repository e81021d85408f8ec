"""Auth: etcd's users, roles and permissions (``storage.auth.store``)."""
