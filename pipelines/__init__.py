"""Tailor's library: config, contracts, sources, sinks and pure DataFrame transformations.

Importing this package (or `pipelines.config`, `pipelines.contracts`) must not import
pyspark: the API and the producers use the config and the contract without Spark.
"""
