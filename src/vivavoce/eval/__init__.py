"""Evaluation: intelligibility (WER/CER by ASR), quality (DNSMOS), speaker similarity, prosody, latency."""
