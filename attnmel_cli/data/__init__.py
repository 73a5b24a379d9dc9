"""Data: decoding, the paper's transforms, source readers, prepare, manifest, training set."""
