"""Object counts of a probe point: objects, confident detections, matched and correctly classified objects."""
from __future__ import annotations

from . import shape_bias as sb


def object_counts(gt, results: list[dict], image_ids: list[int], category_ids: list[int], iou: float, score: float,
                  iou_type: str) -> dict:
    """Objects (non-crowd, of the model's classes), confident detections, matched objects (any class, IoU >= iou)
    and correctly classified matched objects."""
    by_image: dict[int, list[dict]] = {}
    for r in results:
        by_image.setdefault(int(r["image_id"]), []).append(r)
    objects = matched = correct = 0
    cats = set(category_ids)
    for iid in image_ids:
        anns = [a for a in gt.imgToAnns.get(iid, []) if not a.get("iscrowd", 0) and a["category_id"] in cats]
        if iou_type == "segm":
            anns = [{**a, "rle": gt.annToRLE(a)} for a in anns]
        found = sb.match(by_image.get(iid, []), anns, iou, score, iou_type)
        objects += len(anns)
        matched += sum(d is not None for d in found)
        correct += sum(d is not None and d["category_id"] == a["category_id"] for a, d in zip(anns, found))
    return {"images": len(image_ids), "objects": objects,
            "detections": sum(r["score"] >= score for r in results), "matched": matched, "correct": correct}
