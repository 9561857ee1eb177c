"""Demo and test data: the synthetic world generator, its producers, and the Online Retail
replay."""
