"""The paper's network: attention gates, the AttnMel variants, backbones, the model registry."""
