"""Core-product detection: MOON feeds the crop of the core product next to the original image.

MMDetection is imported only when a detector is built, so reading stored boxes (``BoxStore``) and the
selection policy work without loading it.
"""

from .backend import Detections, Detector, default_detector
from .box_index import BoxIndex
from .selection import BoxPolicy, Selection, crop, select_boxes
from .store import BoxStore, DetectReport, detect_images

__all__ = [
    "BoxIndex",
    "BoxPolicy",
    "BoxStore",
    "DetectReport",
    "Detections",
    "Detector",
    "Selection",
    "crop",
    "default_detector",
    "detect_images",
    "select_boxes",
]
