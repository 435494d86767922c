"""selfsup-zoo: CARE and SERE self-supervised backbones for timm."""
