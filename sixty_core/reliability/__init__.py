"""Reliability scenarios, fault injection and the scorecard (RELIABILITY.md)."""
