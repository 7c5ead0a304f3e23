//! etcd server launcher for tests (filled in by the etcd driver work).
