"""Fake outside services for tests: real HTTP servers on loopback, strict like the originals."""
