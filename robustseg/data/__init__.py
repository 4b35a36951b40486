from .coco import CocoDataset, coco_from_dict, collate, read_coco_json
from .images import load_image, safe_join
from .synth import default_split, generate as generate_synthetic

__all__ = ["CocoDataset", "coco_from_dict", "collate", "read_coco_json", "load_image", "safe_join",
           "default_split", "generate_synthetic"]
