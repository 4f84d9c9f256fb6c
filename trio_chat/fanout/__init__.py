"""Fan-out: getting what is said to everyone who should hear it.

A room's lines go once into its log (`log.Log`); each member reads the logs
of its rooms, and a small log of its own, through cursors (`reader.Reader`),
and writes everything it is behind by in one non-blocking call whenever its
socket takes data. Nothing here imports trio or reads a clock: the server
decides when to flush (once per scheduler pass) and waits for writability
only for members the kernel has refused.
"""
