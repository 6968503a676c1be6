"""Putting a trained model to work: load it from a run or an exported file, read images, explain them."""
