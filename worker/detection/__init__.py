"""Object detection's own pieces: the DETR-family image processors, the answer, the datasets.

- `processor`: how DETR, Conditional DETR and YOLOS image processors turn a photo into
  `pixel_values` and `pixel_mask` (resize by `shortest_edge`/`longest_edge`, rescale, normalise,
  pad), reproduced from `preprocessor_config.json`, or refused naming the field.
- `answer`: the model's own `post_process_object_detection` on a batch's named outputs, with each
  image's upright original size as its target size, shaped as transformers' `object-detection`
  pipeline answers (`[{"score", "label", "box": {"xmin", "ymin", "xmax", "ymax"}}]`).
- `datasets`: COCO JSON and YOLO text datasets, with splits, read into one form, every broken
  record an error naming the file or a counted, reported drop.

Images of different sizes are not padded together: each resized image keeps its own shape, and
only images of the same shape share a forward (the task seam's same-shape micro-batches). The
processor would pad a batch to its largest image, which changes a DETR's answer near the padding
(its convolutions see the zeros) and a YOLOS's everywhere (it has no pixel mask); the
`object-detection` pipeline runs each image alone, and so the worker answers as it does.
"""
