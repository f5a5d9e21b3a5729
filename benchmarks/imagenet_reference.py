"""One-off development check: logits of the reference PyTorch EfficientNet-Lite0 on random inputs.

Runs in a SEPARATE environment that has torch (never a dependency of this project):

    python3 -m venv /tmp/venv-torch
    /tmp/venv-torch/bin/pip install torch==2.13.0 efficientnet-lite-pytorch==0.1.0 numpy
    /tmp/venv-torch/bin/python benchmarks/imagenet_reference.py --weights <the .pth> \
        --out ~/.cache/labnets/reference/efficientnet-lite0-reference-logits.npz

`python -m training evaluate imagenet` then compares the port's logits with these. Only numpy and
torch are imported here, so the script needs nothing else from the project.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(args.weights))
    model.eval()
    # Random images already in the network's input range, (x - 127) / 128 ∈ [-1, 1); NHWC here.
    inputs = np.random.default_rng(args.seed).uniform(-1.0, 1.0, (args.images, 224, 224, 3)).astype(np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(inputs.transpose(0, 3, 1, 2).copy())).numpy()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, inputs=inputs, logits=logits, torch_version=torch.__version__)
    print(f"wrote {args.out}: logits {logits.shape}, top-1 {logits.argmax(1).tolist()}")


if __name__ == "__main__":
    main()
