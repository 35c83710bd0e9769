"""Training recipes: plain scripts over the library (`vivavoce train tokenizer|decoder|vocoder`)."""
