"""Built-in experiment presets (TOML), one per dataset."""
