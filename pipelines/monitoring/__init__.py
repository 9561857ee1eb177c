"""Where the pipeline stands: `tailor status` and what monitoring reads."""
