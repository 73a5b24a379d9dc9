"""Attention maps drawn onto photographs: overlays, composites, explain's files."""
