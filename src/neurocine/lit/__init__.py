"""LightningModules that wire the networks into the two NeuroCine training stages."""
