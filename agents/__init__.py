"""Faust agents (stream processors) and timers of the service."""
