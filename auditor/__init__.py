"""auditor: find clean-label poisons that distort the implicit bias of state-space models."""

__version__ = "0.1.0"
