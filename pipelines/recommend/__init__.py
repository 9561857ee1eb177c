"""Recommendations: candidate models over an interaction log, their blend, time and
random splits, and ranking metrics; pure DataFrame functions, no I/O."""
