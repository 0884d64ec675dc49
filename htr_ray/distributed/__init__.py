"""The Ray shells around the core: runtime (start or join Ray), train, transcribe, serve and generation."""
