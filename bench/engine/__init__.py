"""The engine: a run's spec -> stages trained -> ranks evaluated -> a sealed record in the store."""
