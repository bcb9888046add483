"""The model registry: candidates, lineage, the gate, versions and aliases, promote, evaluate."""
