"""Release: push, evidence (contract report, SBOM, provenance, signatures), promotion."""
