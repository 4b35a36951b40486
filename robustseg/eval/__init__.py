from .coco_eval import IOU_TYPES, METRICS, evaluate, predict, to_coco_results

__all__ = ["IOU_TYPES", "METRICS", "evaluate", "predict", "to_coco_results"]
