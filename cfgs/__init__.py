"""Presets shipped with the codec: one YAML file per preset (see README)."""
