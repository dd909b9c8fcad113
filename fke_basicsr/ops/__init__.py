"""Pure tensor math (no BasicSR import): each op has a readable reference and a fast path."""
