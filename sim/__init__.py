"""The simulated embodiment: a Gymnasium tabletop, its scripted expert, and synthetic episodes."""
