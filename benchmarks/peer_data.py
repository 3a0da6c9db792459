"""The Python baseline of `npm run bench -- data`: what diffusers' train_text_to_image.py does per
image (PIL open, convert("RGB"), EXIF transpose, torchvision Resize(512, bilinear) -> CenterCrop(512)
-> ToTensor -> Normalize([0.5], [0.5])), one process, one torch thread, over the files in argv.
Prints one JSON line: {"images": n, "ms": total wall time of the timed pass}.
Usage: /usr/bin/python3 benchmarks/peer_data.py RESOLUTION FILE...
"""
import json
import sys
import time

import torch
from PIL import Image, ImageOps
from torchvision import transforms

torch.set_num_threads(1)
resolution = int(sys.argv[1])
files = sys.argv[2:]
pipeline = transforms.Compose(
    [
        transforms.Resize(resolution, interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.CenterCrop(resolution),
        transforms.ToTensor(),
        transforms.Normalize([0.5], [0.5]),
    ]
)


def one(path):
    image = ImageOps.exif_transpose(Image.open(path).convert("RGB"))
    return pipeline(image)


# diffusers calls exif_transpose after convert; convert drops nothing the transpose needs
# because PIL keeps .info/getexif() on the converted copy.
t0 = time.perf_counter()
for f in files:
    one(f)
print(json.dumps({"images": len(files), "ms": (time.perf_counter() - t0) * 1000}))
