"""Tokenizers: byte-level BPE, character-level and SentencePiece behind one protocol."""
