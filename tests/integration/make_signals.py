#!/usr/bin/env python3
"""Writes a multichannel time series with a class label per step, for
conv1d_signals.sh.

usage: make_signals.py OUT.csv STEPS BLOCK SEED

Columns ch0, ch1, ch2, label. The series is a run of segments, each of one
class and 2 to 6 BLOCKs long, so windows of BLOCK steps at a stride of
BLOCK never straddle two classes. Classes: 0 slow sine, 1 fast sine,
2 square wave, 3 smoothed noise; each channel of a segment has its own
amplitude, phase and period jitter, and every value carries Gaussian noise.
The same arguments give the same file (Python's Random is stable).
"""
import math
import random
import sys

CHANNELS = 3


def segment(rng, cls, length):
    chans = []
    for _ in range(CHANNELS):
        amp = rng.uniform(0.5, 1.5)
        phase = rng.uniform(0, 2 * math.pi)
        period = {0: 32.0, 1: 8.0, 2: 16.0, 3: 1.0}[cls] * rng.uniform(0.85, 1.15)
        level, values = 0.0, []
        for t in range(length):
            angle = 2 * math.pi * t / period + phase
            if cls < 2:
                v = amp * math.sin(angle)
            elif cls == 2:
                v = amp if math.sin(angle) >= 0 else -amp
            else:
                # A random walk pulled back to 0: power at all frequencies,
                # unlike the three periodic classes.
                level = 0.8 * level + rng.gauss(0, amp * 0.6)
                v = level
            values.append(v + rng.gauss(0, 0.3))
        chans.append(values)
    return chans


def main():
    out, steps, block, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    with open(out, "w") as f:
        f.write(",".join("ch%d" % c for c in range(CHANNELS)) + ",label\n")
        written = 0
        while written < steps:
            cls = rng.randrange(4)
            length = min(block * rng.randint(2, 6), steps - written)
            chans = segment(rng, cls, length)
            for t in range(length):
                f.write(",".join("%.4f" % chans[c][t] for c in range(CHANNELS)) + ",%d\n" % cls)
            written += length


if __name__ == "__main__":
    main()
