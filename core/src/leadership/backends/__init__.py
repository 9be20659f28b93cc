"""Backends shipped with the core (only ``memory``; real stores are separate plugins)."""
