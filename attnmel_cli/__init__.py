"""attnmel: melanoma recognition via visual attention (Yan et al., IPMI 2019)."""

__version__ = "0.2.0"
