"""Turning a trained model into text: sampling with a KV cache (LMs) and beam search (seq2seq)."""
