"""Model classes registered by tzrec-models: DSSM, MultiTower, MultiTowerDIN."""
