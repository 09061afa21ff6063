"""Torch modules: the GPT and the tokenizer autoencoder, and what loading their weights needs."""
