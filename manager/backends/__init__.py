"""Scaler backends: how the manager starts and stops consumers (`local` processes, later `kubernetes`)."""

from manager.backends.base import ScalerBackend

__all__ = ["ScalerBackend"]
