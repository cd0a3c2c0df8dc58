"""Dependent prior noise, its scheduler and callback, and DDIM sampling."""
