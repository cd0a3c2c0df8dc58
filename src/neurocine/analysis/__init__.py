"""Loading runs and sweeps for notebooks; brain maps of encoder attention."""
