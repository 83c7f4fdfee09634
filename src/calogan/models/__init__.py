"""Generative model families: one module per family, sharing the GANModel contract of base.py."""
