"""The deterministic simulator: simulated network, disk and clock, scenarios, checkers."""
