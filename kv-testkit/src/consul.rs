//! consul server launcher for tests (filled in by the consul driver work).
