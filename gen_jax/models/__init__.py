"""Linen modules: encoders, decoders and the latent-variable models built from them."""
