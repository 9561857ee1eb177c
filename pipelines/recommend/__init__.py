"""Recommendations: candidate models over an interaction log, their blend, time and
random splits, and ranking metrics, as pure DataFrame functions; the I/O sits at the edge,
in `tracking.py` (MLflow) and `writes.py` (the MERGE into gold.recommendations)."""
