"""Stage 1, sources: where the music (or an sACN universe) comes from, decoded and played."""
