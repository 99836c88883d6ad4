"""The stages of `mesodata build` and `mesodata split`, each a step from tables + parameters to tables."""
