"""Stages 2-4: audio to features, the encoder, and the show logic that makes channel states."""
