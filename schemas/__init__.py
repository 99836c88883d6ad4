"""The Arrow schema of every artifact mesodata writes (one YAML file per artifact)."""
