"""Text towers and tokenizers."""
