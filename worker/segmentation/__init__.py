"""Semantic segmentation's own pieces, for the `image-segmentation` task.

- `datasets`: images and class-id masks, folders or a manifest, each broken pair an error naming
  the file before training.
- `scenes`: the demo's digit scenes, each pixel background or its digit, and their inverted domain.
- `answer`: the class map of each image (its logits upsampled to the upright original size and
  argmax'd, as the model's own `post_process_semantic_segmentation`), shaped as transformers'
  `image-segmentation` pipeline answers (`[{"label", "score": None, "mask"}]`, masks as base64
  PNGs, mode L 0/255) or in the compact form (one class-id PNG and per-label areas), and the
  answer's size estimated before it is built.
- `stages`: the task's stages for the task seam (request options, model, forward, size, answers).

Preprocessing is the processor-parity engine's (worker/processors.py, worker/pixels.py): SegFormer's and BEiT's
(Data2Vec-vision's) processors are the same resize, rescale and normalise as the classifiers'
with their own defaults; `do_reduce_labels` touches only training labels, never the pixels.
"""
