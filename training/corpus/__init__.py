"""The workshop's music: the synthetic demo corpus, stems and ingesting a library."""
