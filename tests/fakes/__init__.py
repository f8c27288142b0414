"""Fakes of outside systems, served over real HTTP on loopback (or, for our own protocols,
as plain objects)."""
