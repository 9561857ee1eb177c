"""The product catalogue: a feed checked and merged into silver.products."""
