"""Transaction data: the generator's CSV table and the synthetic transaction generator."""
