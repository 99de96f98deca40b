"""Targets from the frozen LLM: its replies to text instructions."""
