#!/usr/bin/env python3
"""PyTorch's side of bench/vs-pytorch.sh: the project's LeNet-5 (conv 6 5x5
pad 2, ReLU, max-pool 2; conv 16 5x5, ReLU, max-pool 2; dense 120, 84, 10
with ReLU between) trained on MNIST's train split exactly as
`esgd-bench --train` trains it: batch 32, plain SGD (no momentum, no weight
decay), lr 0.1 in epoch 0 halved each epoch, a fresh permutation per epoch,
softmax cross-entropy, one thread.

Timed: only the training loop (per batch: gather and scale the 32 images,
forward, loss, backward, SGD step); loading the data and the final test
evaluation are not. Prints one JSON line like esgd-bench's.

usage: vs_pytorch.py DATA_DIR [EPOCHS]
"""
import json
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def read_idx(path):
    with open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def user_seconds():
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


def main():
    data_dir = sys.argv[1]
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    torch.set_num_threads(1)
    torch.manual_seed(1)
    batch = 32
    # The images stay bytes, as in esgd (dataset_fill_batch scales each batch).
    train_x = torch.from_numpy(read_idx(os.path.join(data_dir, "train-images-idx3-ubyte")).copy())
    train_y = torch.from_numpy(read_idx(os.path.join(data_dir, "train-labels-idx1-ubyte")).astype(np.int64))
    test_x = torch.from_numpy(read_idx(os.path.join(data_dir, "t10k-images-idx3-ubyte")).copy())
    test_y = torch.from_numpy(read_idx(os.path.join(data_dir, "t10k-labels-idx1-ubyte")).astype(np.int64))
    model = LeNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    n = train_x.shape[0]
    steps = n // batch
    gen = torch.Generator().manual_seed(11)
    t0, u0 = time.perf_counter(), user_seconds()
    loss_sum = 0.0
    for epoch in range(epochs):
        for group in opt.param_groups:
            group["lr"] = 0.1 * 0.5 ** epoch
        perm = torch.randperm(n, generator=gen)
        loss_sum = torch.zeros(())
        for s in range(steps):
            idx = perm[s * batch:(s + 1) * batch]
            x = train_x[idx].unsqueeze(1).float().div_(255.0)
            y = train_y[idx]
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach()
    wall, user = time.perf_counter() - t0, user_seconds() - u0
    with torch.no_grad():
        correct = 0
        for i in range(0, test_x.shape[0], 1000):
            out = model(test_x[i:i + 1000].unsqueeze(1).float().div_(255.0))
            correct += int((out.argmax(1) == test_y[i:i + 1000]).sum())
    samples = epochs * steps * batch
    print(json.dumps({
        "impl": "pytorch", "version": torch.__version__, "model": "lenet", "batch": batch, "epochs": epochs,
        "samples": samples, "seconds": round(wall, 3), "user_seconds": round(user, 3),
        "samples_per_second": round(samples / wall), "samples_per_user_second": round(samples / user),
        "last_epoch_loss": round(float(loss_sum) / steps, 4),
        "test_accuracy": round(correct / test_x.shape[0], 4), "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
