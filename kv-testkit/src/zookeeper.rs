//! zookeeper server launcher for tests (filled in by the zookeeper driver work).
