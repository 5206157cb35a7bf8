"""Mask features without model weights, and the clustering embedding.

Glossary
--------
n
    number of masks (rows of the masks table)
d
    feature dimension
features : (n, d) float32
    one vector per mask, row ``i`` for mask row ``i``
quality : (n,) float
    predicted mask quality in [0, 1]
embedding : (n, d' + 1) float32
    standardized, PCA-reduced features scaled to unit root-mean-square pairwise
    distance, plus one weighted quality column; Euclidean distance in it is the
    clustering distance (see :func:`clustering_embedding`)
"""
from .embedding import clustering_embedding
from .load import load_features
from .shape import resize_area, shape_features

__all__ = ["clustering_embedding", "load_features", "resize_area", "shape_features"]
