"""Publishing: content rows, fallback rows, traits and the holdout group
(`transforms.py`, pure), their Delta tables (`writes.py`) and the export to the serving
store (`export.py`). The offer rules (`offers.py`) load without pyspark."""
