"""The workshop's models: the Keras autoencoders and the sklearn end detector."""
