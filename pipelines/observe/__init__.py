"""Watching a run: observer hooks, what a person sees, and what a run returns."""
