"""Data layer: site adapters, pixel readers, label harmonisation, synthetic sites."""
