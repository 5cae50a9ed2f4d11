"""Quantization backends. Each imports its optional dependency lazily, so kdedge runs without them."""
