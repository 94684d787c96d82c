"""Protocols: `schema` (the pydantic model, importable by every layer) and `load` (YAML loading, reference
checks against the registries, canonical form and fingerprint). This file imports neither, so a lower
layer that needs the schema does not pull in the loader and every registry it checks against."""
